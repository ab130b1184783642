"""The one domain rule (xenevt/cli/context.py), over every command of the tree.

``-d`` before and after the command gives the same result; ``--as 1`` without ``-d`` acts on dom1; the global
options are accepted in either position; a domain is named by id or by name; an option a command cannot honour is
a usage error (exit 2); ``sim reset``/``destroy`` touch only the domain named.  Each command line runs in its own
forked process (tests/cli_driver.py) on a fresh copy of the same host, so the two forms see the same state.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tempfile

import click
import pytest

from xenevt.cli import cli, main
from xenevt.sim.host import SimHost, create_host

# Each leaf command with arguments that work for dom1 of the host below, and how it treats -d:
# "one"/"many": the command acts on the domain named; "none": -d is refused (exit 2) in either position.
MATRIX: dict[str, tuple[str, list[str]]] = {
    "bind unbound": ("one", ["bind", "unbound", "0"]),
    "bind interdomain": ("one", ["bind", "interdomain", "0", "3"]),
    "bind virq": ("one", ["bind", "virq", "timer"]),
    "bind ipi": ("one", ["bind", "ipi"]),
    "bind-vcpu": ("one", ["bind-vcpu", "1", "1"]),
    "close": ("one", ["close", "2"]),
    "mask": ("one", ["mask", "1"]),
    "unmask": ("one", ["unmask", "1"]),
    "notify": ("one", ["notify", "1"]),
    "set-priority": ("one", ["set-priority", "1", "3"]),
    "status": ("one", ["status", "1", "2"]),
    "wait": ("one", ["wait", "-t", "0"]),
    "list": ("many", ["list"]),
    "dump": ("many", ["dump"]),
    "doctor": ("many", ["doctor"]),
    "watch": ("many", ["watch", "--once", "-i", "0.05"]),
    "exporter": ("many", ["exporter", "--once"]),
    "sim reset": ("many", ["sim", "reset"]),
    "sim pause": ("one", ["sim", "pause"]),
    "sim unpause": ("one", ["sim", "unpause"]),
    "sim destroy": ("one", ["sim", "destroy"]),
    "sim xen-port": ("one", ["sim", "xen-port"]),
    "sim device add": ("one", ["sim", "device", "add", "vif"]),
    "sim device push": ("one", ["sim", "device", "push", "1"]),
    "sim device serve": ("one", ["sim", "device", "serve", "--for", "0"]),
    "sim vcpu down": ("one", ["sim", "vcpu", "down", "1"]),
    "sim vcpu up": ("one", ["sim", "vcpu", "up", "1"]),
    "info": ("none", ["info"]),
    "help": ("none", ["help", "list"]),
    "schema": ("none", ["schema"]),
    "completion": ("none", ["completion", "bash"]),
    "demo": ("none", ["demo"]),
    "sim init": ("none", ["sim", "init", "--force", "--yes"]),
    "sim info": ("none", ["sim", "info"]),
    "sim check": ("none", ["sim", "check"]),
    "sim libpath": ("none", ["sim", "libpath"]),
    "sim replay": ("none", ["sim", "replay", "--list"]),
    "sim device list": ("none", ["sim", "device", "list"]),
    "runner accel": ("none", ["runner", "accel"]),
    "runner fetch": ("none", ["runner", "fetch", "--xen", "4.17"]),
    "runner run": ("none", ["runner", "run", "--", "true"]),
}


def leaves(group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from leaves(cmd, ctx, path + (name,))
        else:
            yield " ".join(path + (name,))


def run_one(argv: list[str]) -> dict:
    """``xenevt ARGV`` in a forked child with its own stdout and stderr (as tests/cli_driver.py, but with
    sys.stdout/sys.stderr made over them again: pytest's capture replaced them in this process)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), write_through=True)
                sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), write_through=True)
                sys.stdin = open(os.devnull)
                code = main(argv)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return {"argv": argv, "code": os.waitstatus_to_exitcode(status), "out": out.read().decode(errors="replace"),
                "err": err.read().decode(errors="replace")}


def test_the_matrix_covers_every_command():
    with click.Context(cli) as ctx:
        assert set(leaves(cli, ctx)) == set(MATRIX)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """dom1 port 1 <-> dom0 port 1, dom0 port 2 VIRQ timer, dom1 port 2 an IPI, dom0 port 3 waiting for dom1;
    an event sent to dom1's port 1."""
    state = str(tmp_path_factory.mktemp("template") / "host")
    create_host(state, 2, 2)
    with SimHost(state) as h:
        p = h.alloc_unbound(1, 1, 0)
        h.bind_interdomain(0, 0, 1, p)
        h.bind_virq(0, 0, 0, 0)
        h.bind_ipi(1, 1, 0)
        h.alloc_unbound(0, 0, 1)
        h.send(0, 0, 1)  # (an event for dom1 to take: `wait` has something to say)
    return state


@pytest.fixture
def fresh(template, tmp_path):
    """Run a command line on a fresh copy of the template, always at the same path (outputs name it)."""
    state = str(tmp_path / "host")

    def run(argv: list[str]) -> dict:
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(template, state)
        r = run_one(["--state", state, "--no-pager", *argv])
        r["state"] = state
        return r

    return run


def same(a: dict, b: dict, argv: list[str]) -> None:
    out_a, out_b = a["out"], b["out"]
    assert out_a or a["err"], a  # (something was said: two empty outputs prove nothing)
    if argv[0] == "watch":  # (rates over two real intervals: the rows, not their timing)
        out_a, out_b = (sorted(line.split()[1] for line in o.splitlines()[1:] if line.strip()) for o in (out_a, out_b))
    if argv[0] == "exporter":  # (the series and their values, not the collection's own timing or the process')
        out_a, out_b = ([ln for ln in o.splitlines() if ln.startswith("xenevt_") and "duration" not in ln
                         and "timestamp" not in ln] for o in (out_a, out_b))
    assert (a["code"], out_a, a["err"]) == (b["code"], out_b, b["err"]), (a["argv"], b["argv"])


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """The command's words and its arguments (the words before the first argument that is not a command)."""
    n = 2 if argv[0] in ("bind", "sim", "runner") else 1
    if argv[:3] in (["sim", "device", "add"], ["sim", "device", "list"], ["sim", "device", "push"],
                    ["sim", "device", "serve"], ["sim", "vcpu", "down"], ["sim", "vcpu", "up"]):
        n = 3
    return argv[:n], argv[n:]


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_d_before_and_after_the_command_is_the_same(fresh, name):
    kind, argv = MATRIX[name]
    words, args = _split(argv)
    before = fresh(["-d", "1", *argv])
    after = fresh([*words, "-d", "1", *args])
    same(before, after, argv)
    if kind == "none":
        assert before["code"] == 2 and "takes no -d/--domain" in before["err"], before
    else:
        assert before["code"] == 0, before


@pytest.mark.parametrize("name", sorted(n for n, (k, _) in MATRIX.items() if k != "none"))
def test_as_1_without_d_acts_on_dom1(fresh, name):
    _, argv = MATRIX[name]
    same(fresh(["--as", "1", *argv]), fresh(["--as", "1", "-d", "1", *argv]), argv)


@pytest.mark.parametrize("name", ["list", "status", "doctor", "dump", "notify"])
def test_a_domain_by_name_is_the_domain_by_id(fresh, name):
    _, argv = MATRIX[name]
    same(fresh(["-d", "Domain-0", *argv]), fresh(["-d", "0", *argv]), argv)
    same(fresh(["-d", "guest1", *argv]), fresh(["-d", "1", *argv]), argv)


def test_an_unknown_name_is_a_usage_error_listing_the_names(fresh):
    r = fresh(["list", "-d", "web"])
    assert r["code"] == 2
    assert r["err"] == "xenevt: list: '--domain' / '-d' 'web': no domain is named 'web' (this host's: Domain-0 (0), " \
                       "guest1 (1))\n"


def test_list_takes_several_domains_and_all_of_them(fresh):
    r = fresh(["list", "-d", "0", "-d", "1"])
    assert r["code"] == 0 and "domain 0: 3 open port(s)" in r["out"] and "domain 1: 2 open port(s)" in r["out"]
    assert fresh(["-d", "0", "list", "-d", "1"])["out"] == r["out"]  # (both positions add up)
    assert fresh(["list", "--all-domains"])["out"] == r["out"]
    rows = json.loads(fresh(["list", "-d", "0", "-d", "1", "--json"])["out"])["ports"]
    assert sorted({row["domain"] for row in rows}) == [0, 1]


def test_doctor_with_d_before_checks_that_domain_only(fresh):
    r = fresh(["-d", "1", "doctor"])
    assert "in 1 domain(s)" in r["out"]
    assert "in 2 domain(s)" in fresh(["doctor"])["out"]


def test_d_1_sim_reset_closes_no_port_of_dom0(fresh):
    r = fresh(["-d", "1", "sim", "reset"])
    assert r["code"] == 0 and r["out"] == "domain 1: closed 2 port(s)\n"
    with SimHost(r["state"], read_only=True) as h:
        assert [st.port for st in h.list_ports(0, 0)] == [1, 2, 3]
        assert h.list_ports(0, 1) == []


def test_destructive_sim_commands_need_a_domain_or_all_and_yes(fresh):
    bare = fresh(["sim", "reset"])
    assert bare["code"] == 2 and "name the domain to reset" in bare["err"]
    every = fresh(["sim", "reset", "--all"])  # (stdin is not a terminal: no one to ask)
    assert every["code"] == 2 and "add --yes to confirm" in every["err"]
    with SimHost(every["state"], read_only=True) as h:
        assert len(h.list_ports(0, 0)) == 3
    said = "domain 0: closed 3 port(s); domain 1: closed 2 port(s)\n"
    assert fresh(["sim", "reset", "--all", "--yes"])["out"] == said
    assert fresh(["sim", "destroy"])["code"] == 2
    assert fresh(["sim", "destroy", "--all"])["code"] == 2
    gone = fresh(["sim", "destroy", "--all", "--yes"])
    assert gone["code"] == 0 and gone["out"].startswith("domain 1 destroyed (gone)")
    live = fresh(["sim", "init", "--force"])
    assert live["code"] == 2
    assert "which is in use (3 open port(s) in domain 0; 2 open port(s) in domain 1)" in live["err"]


UNHONOURED = [
    (["info", "-d", "1"], "takes no -d/--domain"),
    (["status", "1", "-d", "0", "-d", "1"], "acts on one domain, and domain 0 and domain 1 were named"),
    (["-d", "0", "notify", "1", "-d", "1"], "acts on one domain"),
    (["list", "-d", "0", "--all-domains"], "give -d/--domain or --all-domains, not both"),
    (["--state", "/elsewhere", "list", "--state", "/other"], "--state given twice"),
    (["-b", "sim", "list", "-b", "xen"], "--backend/-b given twice"),
    (["sim", "reset", "--all", "-d", "1"], "give -d/--domain or --all, not both"),
    (["sim", "destroy", "1", "-d", "0"], "acts on one domain"),
]


@pytest.mark.parametrize(("argv", "said"), UNHONOURED, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_an_option_a_command_cannot_honour_is_a_usage_error(fresh, argv, said):
    r = fresh(argv)
    assert r["code"] == 2 and said in r["err"] and r["err"].count("\n") == 1, r


def test_dump_from_a_file_checks_the_domain_named(fresh, tmp_path):
    raw = str(tmp_path / "d0.raw")
    assert fresh(["dump", "--raw", raw])["code"] == 0
    r = fresh(["dump", "--from", raw, "-d", "1"])
    assert r["code"] == 2 and "--from holds domain 0, not domain 1" in r["err"]
    assert fresh(["dump", "--from", raw, "-d", "0"])["out"] == fresh(["dump", "--from", raw])["out"]


def test_global_options_after_the_command(fresh, tmp_path):
    before = fresh(["--no-pager", "-b", "sim", "--json", "list"])
    after = fresh(["list", "--no-pager", "-b", "sim", "--json"])
    assert before["code"] == 0 and before["out"] == after["out"]
    elsewhere = str(tmp_path / "elsewhere")
    shutil.copytree(fresh(["info"])["state"], elsewhere)
    assert run_one(["list", "--state", elsewhere])["out"] == run_one(["--state", elsewhere, "list"])["out"]


def test_status_takes_several_ports(fresh):
    r = fresh(["status", "1", "3"])
    assert r["code"] == 0 and "d0:1: interdomain" in r["out"] and "d0:3: unbound" in r["out"]
    rows = [json.loads(line) for line in fresh(["status", "1", "3", "--json"])["out"].splitlines()]
    assert [row["port"] for row in rows] == [1, 3]


def test_a_port_waiting_for_a_gone_domain_is_a_warning_from_every_source(tmp_path):
    """The backend's view, an 'e' dump and lsevtchn's text agree: lsevtchn prints no domain list, so the host's
    own is taken where it lists the domain the text is about; with no host, a warning says what went unchecked."""
    from tests.edump_writer import lsevtchn_line
    from xenevt.backend.sim import SimBackend

    state = str(tmp_path / "host")
    create_host(state, 3, 1)
    with SimHost(state) as h:
        port = h.alloc_unbound(0, 0, 2)
        h.destroy_domain(0, 2)
    edump, ls = tmp_path / "e.txt", tmp_path / "ls.txt"
    edump.write_text(SimBackend(state, read_only=True).debug_dump("e"))
    ls.write_text(lsevtchn_line(port, 0, "unbound", d=2) + "\n")
    title = f"d0:{port}: port {port} is waiting for domain 2, which no longer exists"
    for source in ([], ["--edump", str(edump)], ["--lsevtchn", str(ls)]):
        r = run_one(["--state", state, "doctor", "-d", "0", *source])
        assert r["code"] == 3 and title in r["out"], (source, r)
    alone = run_one(["--state", str(tmp_path / "none"), "-b", "sim", "doctor", "--lsevtchn", str(ls), "-d", "0"])
    assert alone["code"] == 0 and "whether the peer domain(s) 2 still exist was not checked" in alone["err"]
