"""Every command through the one access table (xenevt/sim/access.py RULES), side doors included.

The command tree is walked, so a new command or subcommand fails here until it is given a row: run as
``--as 1`` naming domain 0 it is refused in one line with EPERM, exit 1, and the state file, the xenstore file
and any file it was asked to write are left as they were; run as ``--as 0`` naming domain 1 (the privileged
control) it is refused likewise where Xen acts on the caller's own domain only (SELF), and let through where a
privileged caller may (TARGET, PRIV).  The few commands that name no domain and change nothing are listed in
ALLOWED, each with the reason.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

import click
import pytest

from xenevt.cli import cli, main
from xenevt.sim.access import PRIV, SELF, TARGET
from xenevt.sim.foreign import EVENT_ARRAY_GFN
from xenevt.sim.host import SimHost, create_host

# per command path: the rule, and argument lists naming domain {d} (several where a command has side doors);
# {out} is a file the command is asked to write
CASES: dict[str, tuple[str, list[list[str]]]] = {
    "bind interdomain": (SELF, [["-d", "{d}", "bind", "interdomain", "2", "1"]]),
    "bind ipi": (SELF, [["-d", "{d}", "bind", "ipi", "-n", "1", "-t", "0"]]),
    "bind unbound": (TARGET, [["-d", "{d}", "bind", "unbound", "2"]]),
    "bind virq": (SELF, [["-d", "{d}", "bind", "virq", "timer"]]),
    "bind-vcpu": (SELF, [["-d", "{d}", "bind-vcpu", "1", "1"]]),
    "close": (SELF, [["-d", "{d}", "close", "1"]]),
    "doctor": (TARGET, [["doctor", "-d", "{d}"], ["doctor", "-d", "{d}", "--save", "{out}"],
                        ["doctor", "-d", "{d}", "--interval", "0.1"]]),
    "dump": (TARGET, [["-d", "{d}", "dump"], ["-d", "{d}", "dump", "--raw", "{out}"],
                      ["-d", "{d}", "dump", "--raw", "-"],
                      ["-d", "{d}", "dump", "--all-words"], ["-d", "{d}", "dump", "--gfn", hex(EVENT_ARRAY_GFN)],
                      ["-d", "{d}", "dump", "--format", "raw", "--output", "{out}"], ["dump", "--all-domains"],
                      ["-d", "{d}", "dump", "--shared-info", "auto"]]),
    "exporter": (TARGET, [["-d", "{d}", "exporter", "--once"]]),
    "list": (TARGET, [["-d", "{d}", "list"]]),
    "mask": (SELF, [["-d", "{d}", "mask", "1"]]),
    "notify": (SELF, [["-d", "{d}", "notify", "1"], ["-d", "{d}", "notify", "--to", "2:1"]]),
    "set-priority": (SELF, [["-d", "{d}", "set-priority", "1", "3"]]),
    "status": (TARGET, [["-d", "{d}", "status", "1"]]),
    "unmask": (SELF, [["-d", "{d}", "unmask", "1"]]),
    "wait": (SELF, [["-d", "{d}", "wait", "-t", "0"]]),
    "watch": (TARGET, [["-d", "{d}", "watch", "--once", "-i", "0.05"]]),
    "sim destroy": (PRIV, [["sim", "destroy", "{d}"], ["sim", "destroy", "{d}", "--dying"]]),
    "sim device add": (PRIV, [["sim", "device", "add", "vif", "{d}", "--backend", "2"],
                              ["sim", "device", "add", "console", "{d}", "--backend", "2"]]),
    # a PV driver's own acts: the ring and notify of its end, its domain's kernel serving its devices
    "sim device push": (SELF, [["-d", "{d}", "sim", "device", "push", "1"]]),
    "sim device serve": (SELF, [["sim", "device", "serve", "{d}", "--for", "0"]]),
    "sim pause": (PRIV, [["sim", "pause", "{d}"]]),
    "sim reset": (TARGET, [["sim", "reset", "-d", "{d}"]]),
    "sim unpause": (PRIV, [["sim", "unpause", "{d}"]]),
    "sim xen-port": (PRIV, [["sim", "xen-port", "{d}", "--remote", "2"]]),
    # a guest's CPU hotplug: its own, or the toolstack asking it (--xen-only, the guest's own VCPUOP alone, is
    # SELF: tests/test_lifecycle.py)
    "sim vcpu down": (TARGET, [["sim", "vcpu", "down", "{d}", "1"]]),
    "sim vcpu up": (TARGET, [["sim", "vcpu", "up", "{d}", "1"]]),
    # the host as a whole: only its control domain may replace or mend it ({d} unused)
    "sim init": (PRIV, [["sim", "init", "--force", "--yes"]]),
    "sim check": (PRIV, [["sim", "check", "--repair"]]),
}

ALLOWED: dict[str, str] = {
    "demo": "runs on its own throw-away host, never the one --state names",
    "info": "the host's shape (domains, vCPUs, counts), no port state or memory; doctor needs it as a domU too",
    "sim info": "the same as info",
    "sim check": "without --repair it reads the file and changes nothing (--repair is in CASES)",
    "sim device list": "shows an unprivileged caller its own /local/domain/D nodes only, as xenstored does",
    "sim libpath": "builds a library in the user's cache; no host, no domain",
    "sim replay": "runs on its own throw-away host, never the one --state names (or in an empty --keep folder)",
    "help": "prints help text; no host, no domain",
    "schema": "prints the JSON Schema shipped in the package; no host, no domain",
    "completion": "prints a script; a TAB's candidates read the host as --as (a refusal offers nothing)",
    "runner run": "boots a Xen of its own under QEMU; reads no simulated host and no domain of this machine",
    "runner accel": "reads /dev/kvm's API version and the loaded modules; no host, no domain",
    "runner fetch": "downloads Debian packages into the runner's cache; no host, no domain",
}


if importlib.util.find_spec("prometheus_client") is None:  # (an optional extra, absent from the floor venv)
    CASES.pop("exporter")
    ALLOWED["exporter"] = "prometheus-client is not installed here: its row runs where it is"


def leaves(group: click.Group, ctx: click.Context, prefix: str = "") -> list[str]:
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        path = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            out += leaves(cmd, ctx, path + " ")
        else:
            out.append(path)
    return out


def test_every_command_is_in_the_matrix():
    with click.Context(cli) as ctx:
        paths = set(leaves(cli, ctx))
    assert paths == set(CASES) | set(ALLOWED), "give the new command a row in CASES (or ALLOWED, with the reason)"


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Three domains; dom0 port 1 <-> dom1 port 1, an IPI on each, dom2 port 1 unbound for dom1, a vif of dom1
    and of dom2 (so xenstore has nodes of both)."""
    d = str(tmp_path / "host")
    create_host(d, nr_domains=3)
    with SimHost(d) as h:
        h.bind_interdomain(0, 0, 1, h.alloc_unbound(1, 1, 0))
        h.alloc_unbound(2, 2, 1)
        for dom in range(3):
            h.send(dom, dom, h.bind_ipi(dom, dom))
        h.device_add("vif", 1)
        h.device_add("vif", 2)
    monkeypatch.setenv("XENEVT_STATE", d)
    return d


def snapshot(state: str, out: str) -> dict[str, str | None]:
    def digest(path):
        try:
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        except FileNotFoundError:
            return None

    return {name: digest(os.path.join(state, name)) for name in sorted(os.listdir(state))} | {out: digest(out)}


ROWS = [(path, rule, argv) for path, (rule, argvs) in CASES.items() for argv in argvs]


def _argv(argv: list[str], d: int, out: str) -> list[str]:
    return [a.format(d=d, out=out) for a in argv]


@pytest.mark.parametrize("path,rule,argv", ROWS, ids=[" ".join(a) for _, _, a in ROWS])
def test_an_unprivileged_caller_naming_another_domain_is_refused_and_nothing_changes(host, tmp_path, capfd, path,
                                                                                      rule, argv):
    out = str(tmp_path / "written")
    before = snapshot(host, out)
    code = main(["--as", "1"] + _argv(argv, 0, out))
    stdout, stderr = capfd.readouterr()
    assert (code, stdout) == (1, ""), stderr
    assert stderr.startswith("xenevt: ") and stderr.endswith(" (EPERM)\n") and stderr.count("\n") == 1, stderr
    assert "domain 1" in stderr
    assert snapshot(host, out) == before


@pytest.mark.parametrize("path,rule,argv", ROWS, ids=[" ".join(a) for _, _, a in ROWS])
def test_the_privileged_control_naming_another_domain(host, tmp_path, capfd, path, rule, argv):
    out = str(tmp_path / "written")
    before = snapshot(host, out)
    code = main(["--as", "0"] + _argv(argv, 1, out))
    stdout, stderr = capfd.readouterr()
    if rule == SELF:  # Xen's hypercall takes no domain: even dom0 acts on its own ports only
        assert (code, stdout) == (1, "") and stderr.endswith(" (EPERM)\n") and stderr.count("\n") == 1, stderr
        assert snapshot(host, out) == before
    else:
        assert "EPERM" not in stderr
        assert code in (0, 3, 4), stderr  # (doctor: 3 findings, 4 inconclusive)


# (the runner's commands boot QEMU or download packages: tests/test_runner.py runs them)
@pytest.mark.parametrize("path", sorted(set(ALLOWED) - {"sim libpath", "sim check", "exporter", "runner run",
                                                       "runner fetch"}))
def test_allowed_commands_change_nothing(host, tmp_path, capfd, monkeypatch, path):
    monkeypatch.setenv("SHELL", "/bin/bash")  # (completion without SHELL asks $SHELL; CI's may be unset)
    out = str(tmp_path / "written")
    before = snapshot(host, out)
    code = main(["--as", "1"] + path.split())
    stdout, stderr = capfd.readouterr()
    assert code == 0, stderr
    assert snapshot(host, out) == before


def test_sim_check_reads_only_and_repair_is_the_control_domains(host, capfd):
    before = snapshot(host, "-")
    assert main(["--as", "1", "sim", "check"]) == 0
    assert snapshot(host, "-") == before
    assert main(["--as", "0", "sim", "check", "--repair"]) == 0
    capfd.readouterr()


def test_device_list_shows_a_domU_its_own_nodes(host, capfd):
    assert main(["--json", "--as", "1", "sim", "device", "list"]) == 0
    import json

    nodes = json.loads(capfd.readouterr().out)["nodes"]
    assert nodes and all(k.startswith("/local/domain/1/") for k in nodes)
    assert main(["--json", "--as", "0", "sim", "device", "list"]) == 0
    nodes = json.loads(capfd.readouterr().out)["nodes"]
    assert any(k.startswith("/local/domain/2/") for k in nodes)
