"""The xenevt command line on the simulator: every command, every error, the state left intact.

In-process runs go through ``xenevt.cli.main`` (the error contract lives
there) and click's CliRunner; a few run as real subprocesses, as users do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from xenevt.abi import WORD_MASKED as MASKED
from xenevt.cli import cli, main
from xenevt.sim.host import FILE_NAME, SimHost, create_host


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A host with dom0 (4096 ports) and dom1 (1024 ports), 2 vCPUs each, and:
    dom0:1 <-> dom1:1 interdomain (dom0:1 pending from the bind), dom0:2 unbound for dom1."""
    d = str(tmp_path / "state")
    create_host(d)
    with SimHost(d) as h:
        p1 = h.alloc_unbound(1, 1, 0)
        h.bind_interdomain(0, 0, 1, p1)
        h.alloc_unbound(0, 0, 1)
    monkeypatch.setenv("XENEVT_STATE", d)
    return d


def digest(state_dir: str) -> str:
    with open(os.path.join(state_dir, FILE_NAME), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def xe(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""

    def run(*args: str):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


# --- every command works ------------------------------------------------------
def test_every_command_on_the_simulator(state, tmp_path):
    r = CliRunner()
    info = json.loads(ok(r.invoke(cli, ["sim", "info", "--json"])))
    assert [d["domain"] for d in info["domains"]] == [0, 1] and info["abi"] == "FIFO"
    assert "ports in use" in ok(r.invoke(cli, ["info"]))
    # a new pair: dom1 offers, dom0 connects
    p1 = int(ok(r.invoke(cli, ["-d", "1", "bind", "unbound", "0"])))
    p0 = json.loads(ok(r.invoke(cli, ["bind", "interdomain", "1", str(p1), "--json"])))
    assert p0["state"] == "interdomain" and p0["remote_port"] == p1 and p0["flags"]["pending"]
    p0 = p0["port"]
    virq = int(ok(r.invoke(cli, ["bind", "virq", "timer", "--vcpu", "1"])))
    ipi = int(ok(r.invoke(cli, ["bind", "ipi", "--vcpu", "1"])))
    assert "waiting for domain 1" in ok(r.invoke(cli, ["list"]))
    rows = {p["port"]: p for p in json.loads(ok(r.invoke(cli, ["list", "--json"])))["ports"]}
    assert rows[virq]["virq"] == 0 and rows[virq]["vcpu"] == 1 and rows[ipi]["state"] == "ipi"
    # drain what the binds left pending on vCPU 0, then drive one port through its life
    out = ok(r.invoke(cli, ["wait", "--count", "2", "--timeout", "2"]))
    assert out.count("event on port") == 2
    assert "priority 3" in ok(r.invoke(cli, ["set-priority", str(p0), "3"]))
    assert "notifies vCPU 1" in ok(r.invoke(cli, ["bind-vcpu", str(p0), "1"]))
    assert "(now -M--)" in ok(r.invoke(cli, ["mask", str(p0)]))
    assert "pending, masked" in ok(r.invoke(cli, ["-d", "1", "notify", str(p1)]))
    st = json.loads(ok(r.invoke(cli, ["status", str(p0), "--json"])))
    assert st["flags"] == {"pending": True, "masked": True, "linked": False, "busy": False} and st["link"] == 0
    assert "(now P-L-)" in ok(r.invoke(cli, ["unmask", str(p0)]))
    (dump,) = json.loads(ok(r.invoke(cli, ["dump", "--json"])))["domains"]
    q = [q for v in dump["vcpus"] for q in v["queues"] if q["chain"]]
    assert q == [dict(q[0], vcpu=1, priority=3, chain=[p0], status="end")]
    text = ok(r.invoke(cli, ["dump"]))
    assert f"head {p0} (control block): {p0}  [end]" in text and "P-L-" in text
    saved = tmp_path / "d0.raw"
    assert "bytes" in ok(r.invoke(cli, ["dump", "--raw", str(saved)]))
    assert json.loads(ok(r.invoke(cli, ["dump", "--from", str(saved), "--json"])))["domains"][0]["vcpus"] == \
        dump["vcpus"]
    ipi_out = ok(r.invoke(cli, ["notify", str(ipi)]))
    assert f"-> d0:{ipi}: queued" in ipi_out
    assert ok(r.invoke(cli, ["wait", "--vcpu", "1", "-n", "2", "-t", "2"])).split() == (
        f"domain 0 vCPU 1: event on port {p0} domain 0 vCPU 1: event on port {ipi}".split())
    assert f"closed d0:{p0}" in ok(r.invoke(cli, ["close", str(p0)]))
    assert "waiting for domain 0" in ok(r.invoke(cli, ["-d", "1", "status", str(p1)]))
    assert "domain 0: closed" in ok(r.invoke(cli, ["sim", "reset", "--all", "--yes"]))
    assert "no open ports" in ok(r.invoke(cli, ["list"]))
    assert "--domain" in ok(r.invoke(cli, ["list", "--help"]))


def test_demo_command_prints_every_step():
    out = ok(CliRunner().invoke(cli, ["demo"]))
    for step in ("boot", "alloc_unbound", "bind_interdomain", "priorities", "consume", "masked", "unmask", "close"):
        assert f"== {step}" in out
    assert "delivered [2, 1]" in out


def test_sim_init_and_reset_one_domain(tmp_path, xe):
    d = str(tmp_path / "new")
    code, out, _ = xe("--state", d, "sim", "init", "--domains", "3", "--vcpus", "1", "--max-ports-domu", "2048")
    assert code == 0 and "3 domain(s)" in out
    code, out, _ = xe("--state", d, "--json", "sim", "info")
    assert [x["max_ports"] for x in json.loads(out)["domains"]] == [4096, 2048, 2048]
    code, _, err = xe("--state", d, "sim", "init")
    assert code == 1 and "already exists" in err and "--force" in err
    assert xe("--state", d, "sim", "init", "--force", "--domains", "2")[0] == 0
    xe("--state", d, "-d", "1", "bind", "ipi")
    code, out, _ = xe("--state", d, "sim", "reset", "-d", "1")
    assert code == 0 and out.strip() == "domain 1: closed 1 port(s)"


def test_text_writes_a_port_one_way_and_each_abi_its_own_columns(tmp_path, xe):
    """A port is d1:3 in text (status, a remote end, notify, mask); status says yes/no, never Python's booleans;
    list and status on a 2-level domain show its two bits (PM), not FIFO's PMLB, LINK and priority."""
    d = str(tmp_path / "h")
    create_host(d, abis={1: "2l"})
    with SimHost(d) as h:
        p1 = h.alloc_unbound(1, 1, 0)
        h.bind_interdomain(0, 0, 1, p1)
    code, out, _ = xe("--state", d, "status", "1")
    assert code == 0 and out.startswith("d0:1: interdomain\n  remote:   d1:1\n"), out
    assert "(pending yes, masked no, linked yes, busy no, link 0)" in out and "True" not in out
    code, out, _ = xe("--state", d, "list")
    assert code == 0 and out.splitlines()[1].split() == ["port", "state", "vcpu", "prio", "PMLB", "link", "remote",
                                                         "name"]
    assert out.splitlines()[2].split()[-1] == "d1:1", out
    code, out, _ = xe("--state", d, "-d", "1", "list")
    assert code == 0 and out.splitlines()[1].split() == ["port", "state", "vcpu", "PM", "remote", "name"], out
    assert out.splitlines()[2].split() == ["1", "interdomain", "0", "--", "d0:1"], out
    code, out, _ = xe("--state", d, "-d", "1", "status", "1")
    assert "  bits:     pending no, masked no\n" in out and "word" not in out and "priority" not in out, out
    assert xe("--state", d, "-d", "1", "notify", "1")[1] == "notified d1:1 -> d0:1: coalesced\n"  # (bind left it)
    assert xe("--state", d, "mask", "1")[1] == "masked d0:1 (now PML-)\n"


# --- every error: one line, the right exit code, the state unchanged -----------------------
ERRORS = [
    (["notify", "999"], 1, "cannot notify port 999 of domain 0: port is not bound"),
    (["notify", "5000"], 1, "port out of range (domain has ports 1..4095)"),
    (["-d", "1", "status", "1024"], 1, "port out of range (domain has ports 1..1023)"),
    (["notify", "200000"], 2, "port 200000 out of range 1..131071"),
    (["mask", "0"], 2, "port 0 out of range"),
    (["unmask", "x1"], 2, "port 'x1' is not a number"),
    (["notify", "2"], 1, "port is unbound, nothing is connected"),
    (["close", "3"], 1, "cannot close port 3 of domain 0: port is not bound"),
    (["--as", "1", "-d", "0", "notify", "1"], 1, "domain 1 may not operate on another domain's ports (EPERM)"),
    (["-d", "1", "--as", "1", "close", "1", "--domain", "0"], 2, "acts on one domain, and domain 1 and domain 0"),
    (["--as", "9", "-d", "0", "notify", "1"], 1, "the calling domain 9 does not exist (ESRCH)"),
    (["-d", "7", "list"], 1, "cannot list the ports of domain 7: no such domain (ESRCH)"),
    (["-d", "40000", "list"], 2, "domain 40000 out of range 0..32751"),
    (["bind", "interdomain", "1", "5"], 1, "cannot bind to port 5 of domain 1: remote port is not unbound"),
    (["bind", "virq", "nope"], 2, "unknown VIRQ 'nope'"),
    (["bind", "virq", "console", "--vcpu", "1"], 1, "VIRQ 2 is global: bind it on vCPU 0"),
    (["bind", "ipi", "--vcpu", "2"], 1, "no vCPU 2 (domain has 2)"),
    (["set-priority", "1", "16"], 2, "priority 16 out of range 0..15"),
    (["bind-vcpu", "1", "5"], 1, "cannot move port 1 of domain 0: no vCPU 5"),
    (["wait", "--vcpu", "1", "-n", "1", "-t", "0.05"], 1, "timed out after 0.05 s with 0 of 1 event(s) on vCPU 1"),
    (["notify"], 2, "give a PORT to send on, or --to DOMAIN:PORT"),
    (["notify", "--to", "1"], 2, "'1' is not DOMAIN:PORT"),
    (["bind", "ipi", "--count", "0"], 2, "count 0 out of range"),
    (["frobnicate"], 2, "No such command 'frobnicate'"),
    (["--backend", "hyperv", "list"], 2, "'hyperv' is not one of"),
    (["dump", "--from", "/nonexistent/dump"], 1, "cannot read dump file /nonexistent/dump: no such file or directory"),
    (["dump", "--all-domains", "--raw", "x.raw"], 2, "--raw saves one domain"),
]


@pytest.mark.parametrize("args,code,message", ERRORS, ids=[" ".join(a) for a, _, _ in ERRORS])
def test_errors_are_one_line_with_exit_code_and_state_unchanged(state, xe, args, code, message):
    before = digest(state)
    rc, out, err = xe(*args)
    assert rc == code
    assert err.startswith("xenevt: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in out + err
    assert digest(state) == before


def test_json_errors_are_objects_with_errno_domain_and_port(state, xe):
    rc, out, err = xe("--json", "notify", "999")
    obj = json.loads(out)
    assert rc == 1 and obj["errno"] == "EINVAL" and obj["port"] == 999 and obj["domain"] == 0
    assert obj["exit_code"] == 1 and obj["type"] == "ChannelError" and err.count("\n") == 1
    rc, out, _ = xe("status", "99999999", "--json")
    assert rc == 2 and json.loads(out)["type"] == "UsageError"


@pytest.mark.skipif(os.path.exists("/dev/xen/evtchn"), reason="this host runs Xen")
def test_xen_backend_says_xen_is_missing(state, xe):
    rc, _, err = xe("--backend", "xen", "list")
    assert rc == 1 and "not running on Xen: /dev/xen/evtchn does not exist" in err


def _corrupt(path, how):
    data = bytearray(open(path, "rb").read())
    if how == "foreign":
        data[:] = os.urandom(len(data))
    elif how == "magic":
        data[0:8] = b"SOMEELSE"
    elif how == "version":
        data[8] = 77
    elif how == "truncated":
        del data[len(data) // 2:]
    elif how == "tiny":
        del data[100:]
    elif how == "domain-table":
        data[64 + 8: 64 + 16] = (1 << 40).to_bytes(8, "little")  # dom0's image offset past the end
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("how,message", [
    ("foreign", "not a xenevt state file (bad magic)"),
    ("magic", "bad magic"),
    ("version", "unsupported state file version 77"),
    ("truncated", "offset 0x10: field file_size: header says"),
    ("tiny", "is truncated (100 bytes)"),
    ("domain-table", "offset 0x48: field domain_table[0].offset: domain 0's image offset 0x10000000000 is not a page "
                     "boundary inside the file"),
])
@pytest.mark.parametrize("args", [["list"], ["notify", "1"], ["dump"], ["wait", "-t", "0"]])
def test_corrupt_state_file_is_refused_and_left_alone(state, xe, how, message, args):
    _corrupt(os.path.join(state, FILE_NAME), how)
    before = digest(state)
    rc, out, err = xe(*args)
    assert rc == 1 and err.count("\n") == 1 and message in err and "state file" in err
    assert digest(state) == before


def test_missing_state_dir(tmp_path, xe):
    missing = str(tmp_path / "nope")
    rc, _, err = xe("--state", missing, "notify", "1")
    assert rc == 1 and err == f"xenevt: no simulated host at {missing}: run `xenevt sim init` first\n"
    assert not os.path.exists(missing)


def test_default_location_gets_a_host_on_first_use(tmp_path, monkeypatch, xe):
    monkeypatch.delenv("XENEVT_STATE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("XENEVT_BACKEND", "sim")
    rc, out, err = xe("list")
    assert rc == 0 and "domain 0: no open ports" in out
    assert f"created a simulated host (2 domains, 2 vCPUs each) at {tmp_path}/xenevt" in err
    assert xe("list") == (0, out, "")


# --- saved dumps ----------------------------------------------------------------------
def test_raw_dump_round_trip_and_every_corruption_named(state, tmp_path, xe):
    path = tmp_path / "dom1.raw"
    assert xe("-d", "1", "dump", "--raw", path)[0] == 0
    live = xe("-d", "1", "dump", "--json")[1]
    rc, saved, _ = xe("dump", "--from", path, "--json")
    assert rc == 0
    (a,), (b,) = json.loads(live)["domains"], json.loads(saved)["domains"]
    assert b["source"].startswith("file ") and a["ports"] == b["ports"] and a["vcpus"] == b["vcpus"]
    data = path.read_bytes()
    cases = {
        "empty": (b"", "empty file"),
        "short": (data[:50], "truncated header: 50 of 128 bytes"),
        "cut": (data[:-1000], f"truncated: {len(data) - 1000} of {len(data)} bytes"),
        "long": (data + b"x", "1 unexpected bytes after offset"),
        "flip": (data[:4000] + bytes([data[4000] ^ 1]) + data[4001:], "checksum mismatch"),
        "pages": (data[:20] + (500).to_bytes(4, "little") + data[24:], "page count 500 out of range 1..128"),
        "vcpus": (data[:16] + (0).to_bytes(4, "little") + data[20:], "vCPU count 0 out of range"),
        "magic": (b"\x7fELF" + data[4:], "not a xenevt raw dump (bad magic)"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name}.raw"
        bad.write_bytes(content)
        rc, out, err = xe("dump", "--from", bad)
        assert (rc, out) == (1, ""), name
        assert err == f"xenevt: dump file {bad}: {message}\n" or (message in err and err.count("\n") == 1), (name, err)
    rc, _, err = xe("dump", "--from", tmp_path)
    assert rc == 1 and "is a directory" in err


def test_dump_shows_a_corrupted_link_where_it_breaks(state, xe):
    """A LINK pointing past the array: the walk stops there and says so (the reviewer's NULL-word question)."""
    with SimHost(state) as h:
        p = h.bind_ipi(0, 0)  # dom0:1 is already queued on vCPU 0 priority 7; the IPI is not pending
        h.send(0, 0, p)       # now 1 -> p on queue 7
        mem = h.domain(0, "t").mem
        mem.set_word(p, mem.word(p) | 5000)  # p's LINK -> port 5000, beyond the one-page array
    rc, out, _ = xe("dump")
    assert rc == 0
    assert f"1 -> {p}  [range]" in out and "LINK/head 5000 has no event word" in out
    q = json.loads(xe("dump", "--json")[1])["domains"][0]["vcpus"][0]["queues"][0]
    assert (q["chain"], q["status"], q["bad_port"], q["broken"]) == ([1, p], "range", 5000, True)


def test_all_words_lists_every_word(state, xe):
    """--all-words: every port of the array, the boot default (plain MASKED) and 0 (bound, at rest) too."""
    (short,) = json.loads(xe("-d", "1", "dump", "--json")[1])["domains"]
    (full,) = json.loads(xe("-d", "1", "dump", "--json", "--all-words")[1])["domains"]
    assert [w["port"] for w in full["ports"]] == list(range(full["event_array_pages"] * 1024))
    extra = [w for w in full["ports"] if w["port"] not in {x["port"] for x in short["ports"]}]
    plain = {"pending": False, "masked": True, "linked": False, "busy": False}
    assert sum(w["flags"] == plain and w["word"] == MASKED for w in extra) == short["plain_masked_ports"] > 1000
    assert all(w["word"] in (MASKED, 0) for w in extra)
    assert len(json.loads(xe("--json", "dump", "--all-domains")[1])["domains"]) == 2


# --- real processes -----------------------------------------------------------------
def xenevt_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "xenevt", *map(str, args)]


def test_subprocess_wait_wakes_on_notify_from_another_process(state):
    env = dict(os.environ, XENEVT_STATE=state)
    subprocess.run(xenevt_cmd("wait", "-n", "1", "-t", "5"), env=env, check=True, capture_output=True)  # bind's event
    waiter = subprocess.Popen(xenevt_cmd("--json", "wait", "--count", "2", "--timeout", "20"), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    for _ in range(2):
        r = subprocess.run(xenevt_cmd("-d", "1", "notify", "1"), env=env, capture_output=True, text=True)
        assert r.returncode == 0 and "queued" in r.stdout or "coalesced" in r.stdout, r.stderr
        time.sleep(0.3)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert [json.loads(line)["port"] for line in out.splitlines()] == [1, 1]


def test_subprocess_ctrl_c_stops_wait_cleanly(state):
    waiter = subprocess.Popen(xenevt_cmd("wait"), env=dict(os.environ, XENEVT_STATE=state),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    waiter.send_signal(signal.SIGINT)
    out, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 130 and "event on port 1" in out  # (interrupted: 128 + SIGINT, as a shell says)
    assert err.strip() == "xenevt: stopped after 1 event(s)"


def test_subprocess_second_consumer_of_a_vcpu_is_refused(state):
    env = dict(os.environ, XENEVT_STATE=state)
    first = subprocess.Popen(xenevt_cmd("wait", "-t", "5"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.8)
    r = subprocess.run(xenevt_cmd("wait", "-t", "0"), env=env, capture_output=True, text=True)
    first.kill()
    first.communicate()
    assert r.returncode == 1 and f"vCPU 0 already has a consumer (pid {first.pid})" in r.stderr


def _unprivileged_prefix() -> list[str] | None:
    """Root ignores file modes; drop the capabilities that let it (setpriv), else nothing to do."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"] if setpriv else None


def test_subprocess_read_only_state_dir(state):
    prefix = _unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: file modes cannot be enforced")
    env = dict(os.environ, XENEVT_STATE=state)
    path = os.path.join(state, FILE_NAME)
    before = digest(state)
    os.chmod(path, 0o444)
    os.chmod(state, 0o555)
    try:
        def run(*args):
            return subprocess.run(prefix + xenevt_cmd(*args), env=env, capture_output=True, text=True)

        for args in (["notify", "1"], ["-d", "1", "bind", "ipi"], ["sim", "init", "--force"], ["wait", "-t", "0"]):
            r = run(*args)
            assert r.returncode == 1 and r.stderr.count("\n") == 1, (args, r.stderr)
            assert "permission denied" in r.stderr and "Traceback" not in r.stderr, r.stderr
        # inspecting needs no write access
        r = run("list")
        assert r.returncode == 0 and "interdomain" in r.stdout, r.stderr
        assert run("dump").returncode == 0 and run("status", "1").returncode == 0
    finally:
        os.chmod(state, 0o755)
        os.chmod(path, 0o644)
    assert digest(state) == before


def test_subprocess_reader_going_away_is_not_an_error(state):
    # both domains, every word: more than a pipe buffer holds, so the writer meets the closed pipe
    p = subprocess.Popen(xenevt_cmd("dump", "--all-words", "--all-domains"), env=dict(os.environ, XENEVT_STATE=state),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().startswith(b"domain 0")
    p.stdout.close()  # like `| head -1`
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0 and err == b""


def test_dump_formats_agree(state, tmp_path, xe):
    """--format text|json|raw describe the same dump; raw goes to a file or a pipe, never a terminal."""
    rc, as_json, _ = xe("dump", "--format", "json")
    assert rc == 0 and json.loads(as_json) == json.loads(xe("--json", "dump")[1])
    out = tmp_path / "d.raw"
    assert xe("dump", "--format", "raw", "-o", out)[0] == 0
    assert json.loads(xe("dump", "--from", out, "--json")[1])["domains"][0]["vcpus"] == \
        json.loads(as_json)["domains"][0]["vcpus"]
    r = subprocess.run(xenevt_cmd("dump", "--format", "raw"), env=dict(os.environ, XENEVT_STATE=state),
                       capture_output=True)
    assert r.returncode == 0 and r.stdout[:8] == b"XENEVTDP" and len(r.stdout) == out.stat().st_size
    assert xe("dump", "-o", out)[0] == 2


def test_help_lists_each_command_by_its_own_first_sentence():
    """`xenevt --help` lists commands from cli.COMMANDS without importing them: each line must be what the
    command's docstring says (click's short help), and each command must live in the module named."""
    import click

    from xenevt.cli import COMMANDS, LazyGroup

    for name, (module, short) in COMMANDS.items():
        g = LazyGroup("probe")
        cmd = g.get_command(click.Context(g), name)
        assert cmd is not None and cmd.callback.__module__ == f"xenevt.cli.{module}", name
        assert cmd.get_short_help_str(limit=10**6) == short, name


def test_help_imports_no_command_and_no_backend():
    code = ("import sys\nfrom xenevt.cli import main\nrc = main(['--help'])\n"
            "print(rc, sorted(m for m in sys.modules if m.startswith(('xenevt.', 'rich'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    rc, mods = r.stdout.strip().splitlines()[-1].split(" ", 1)
    assert rc == "0" and "Commands:" in r.stdout and "set-priority" in r.stdout
    # (`import xenevt` is the public API, every name of it imported on first use: --help asks for none)
    assert eval(mods) == ["xenevt.abi", "xenevt.cli", "xenevt.cli.context", "xenevt.cli.params", "xenevt.errors"], mods


def test_list_and_status_import_no_hypercalls_engine_or_codes(state):
    """`list` and `status` only read: the host opens without the hypercalls, the engines, codes' enums or the
    dump model (what their start costs, issue 15)."""
    for args in (["list"], ["status", "1"]):
        code = (f"import sys\nfrom xenevt.cli import main\nrc = main({args!r})\n"
                "print(rc, sorted(m for m in sys.modules if m.startswith('xenevt.')))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        rc, mods = r.stdout.strip().splitlines()[-1].split(" ", 1)
        assert rc == "0", r.stderr
        loaded = set(eval(mods))
        assert not loaded & {"xenevt.sim.hypercalls", "xenevt.sim.guest", "xenevt.engine.native",
                             "xenevt.engine.twolevel_native", "xenevt.engine.codes", "xenevt.backend.base",
                             "xenevt.dump.model", "xenevt.dump.decode"}, (args, sorted(loaded))


def test_whole_host_views_give_the_collector_back(state, xe):
    """list, dump and doctor pause the cyclic garbage collector while they read (context.whole_host): after
    them, and after one that fails, it runs again; one left paused stays paused."""
    import gc

    assert gc.isenabled()
    for args in (["list"], ["dump"], ["doctor"], ["dump", "--from", "/nonexistent"], ["list", "-d", "7"]):
        xe(*args)
        assert gc.isenabled(), args
    gc.disable()
    try:
        xe("list")
        assert not gc.isenabled()
    finally:
        gc.enable()
