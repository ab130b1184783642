"""The CLI's error contract on every backend: bad input gives one line naming the bad value, exit 1 or 2.

The same table runs on the simulator (in-process), through the real binding on the
simulator's libxenevtchn (a subprocess), and on real Xen in the nested runner's
dom0, where Debian's own click, rich and cffi are installed: the versions a real
Xen host has.  No traceback, no "internal error", ever.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from xenevt.errors import XenevtError
from xenevt.sim.host import create_host

HAVE_XEN = os.path.exists("/dev/xen/evtchn")
REQUIRE_XEN = os.environ.get("XENEVT_REQUIRE_XEN") == "1"
ANY = "any"

# (argv, what the one line must name, which backends: ANY, "sim" or "xen")
CASES = [
    (["status", "0"], "port 0", ANY),
    (["status", "x"], "'x'", ANY),
    (["status", "999999"], "999999", ANY),
    (["status", "--", "-3"], "-3", ANY),
    (["status", "131071"], "131071", ANY),
    (["-d", "31999", "list"], "31999", ANY),
    (["-d", "31999", "status", "1"], "31999", ANY),
    (["-d", "70000", "list"], "70000", ANY),
    (["list", "--domain", "x"], "'x'", ANY),
    (["notify", "--to", "garbage"], "garbage", ANY),
    (["notify", "--to", "0:0"], "port 0", ANY),
    (["notify", "--to", "31999:5"], "31999", ANY),
    (["notify", "--to", "0:99999999"], "99999999", ANY),
    (["bind", "virq", "99"], "99", ANY),
    (["bind", "virq", "--", "-1"], "-1", ANY),
    (["bind", "virq", "timer-ish"], "timer-ish", ANY),
    (["bind", "interdomain", "31999", "1"], "31999", ANY),
    # (not `bind unbound 31999`: Xen's alloc_unbound stores remote_dom unchecked, so on Xen it succeeds)
    (["close", "131071"], "131071", ANY),
    (["unmask", "0"], "port 0", ANY),
    (["set-priority", "1", "99"], "99", ANY),
    (["bind-vcpu", "1", "9999"], "9999", ANY),
    (["wait", "--timeout", "-1"], "-1", ANY),
    (["dump", "--from", "/nonexistent/d.raw"], "/nonexistent/d.raw", ANY),
    (["dump", "--from", "/proc/version"], "/proc/version", ANY),
    (["dump", "--from", "/"], "/", ANY),
    (["dump", "--gfn", "zz"], "zz", ANY),
    (["doctor", "--edump", "/nonexistent/e.txt"], "/nonexistent/e.txt", ANY),
    (["doctor", "--edump", "/proc/version"], "/proc/version", ANY),
    (["doctor", "--lsevtchn", "/nonexistent/l.txt", "-d", "0"], "/nonexistent/l.txt", ANY),
    (["doctor", "--since", "/proc/version"], "/proc/version", ANY),
    (["--backend", "bogus", "list"], "bogus", ANY),
    (["frobnicate"], "frobnicate", ANY),
    # what the simulator refuses by Xen's rules
    (["mask", "77"], "77", "sim"),
    (["--as", "1", "-d", "0", "close", "1"], "domain 0", "sim"),
    # what the real backend cannot do through libxenevtchn: said in one line
    (["mask", "1"], "mask", "xen"),
    (["bind", "ipi"], "IPI", "xen"),
]


def _ids():
    return ["_".join(argv) for argv, _, _ in CASES]  # no spaces: the nested runner reads ids as words


def check(argv, names, code, out, err):
    lines = err.splitlines()
    assert code in (1, 2), (argv, code, out, err)
    assert len(lines) == 1 and lines[0].startswith("xenevt: "), (argv, err)
    assert "Traceback" not in err + out and "internal error" not in err, (argv, err)
    assert names in lines[0], f"{argv}: {lines[0]!r} does not name {names!r}"


@pytest.fixture
def host(tmp_path, monkeypatch):
    state = str(tmp_path / "state")
    create_host(state, nr_domains=2, nr_vcpus=2)
    monkeypatch.setenv("XENEVT_STATE", state)
    monkeypatch.delenv("XENEVT_BACKEND", raising=False)
    return state


@pytest.mark.parametrize("argv,names,where", CASES, ids=_ids())
def test_bad_input_on_the_simulator(argv, names, where, host, capsys):
    from xenevt.cli import main

    if where == "xen":
        pytest.skip("a limit of the real backend")
    code = main(_on("sim", argv))
    out, err = capsys.readouterr()
    check(argv, names, code, out, err)


def _env(**extra) -> dict:
    """A subprocess's environment: this checkout importable, no backend forced from outside."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), **extra)
    env.pop("XENEVT_BACKEND", None)
    return env


def _on(backend: str, argv: list[str]) -> list[str]:
    """``argv`` on ``backend``, unless the case is about --backend itself."""
    return argv if argv[0] == "--backend" else ["--backend", backend, *argv]


def _run(argv, env=None):
    r = subprocess.run([sys.executable, "-m", "xenevt", *argv], capture_output=True, text=True, timeout=120,
                       env=env, cwd="/")
    return r.returncode, r.stdout, r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("argv,names,where", CASES, ids=_ids())
def test_bad_input_through_the_real_binding_on_the_simulator(argv, names, where, host):
    from xenevt.sim import simlib

    if where == "sim":
        pytest.skip("a rule of the simulator's own backend")
    try:
        path = simlib.libpath()
    except XenevtError as e:
        pytest.skip(str(e))
    check(argv, names, *_run(_on("xen", argv), _env(LD_LIBRARY_PATH=path, XENEVT_SELF_DOMID="0")))


@pytest.fixture(scope="module")
def on_xen():
    """Every case run on real Xen by one forking driver: the CLI imported once, each case in its own
    child (the same main() the command runs), since each Python start costs seconds under QEMU."""
    if not HAVE_XEN:
        if REQUIRE_XEN:
            pytest.fail("XENEVT_REQUIRE_XEN=1 but /dev/xen/evtchn does not exist")
        pytest.skip("not running on Xen")
    import json

    env = _env()
    cases = [argv for argv, _, where in CASES if where != "sim"]
    r = subprocess.run([sys.executable, "-m", "tests.cli_driver"], input=json.dumps(cases), capture_output=True,
                       text=True, timeout=600, env=env, cwd=env["PYTHONPATH"])
    assert r.returncode == 0, r.stderr
    return {tuple(c["argv"]): (c["code"], c["out"], c["err"]) for c in json.loads(r.stdout)}


@pytest.mark.xen
@pytest.mark.timeout(600)  # the first case's setup runs every case in the driver: ~100 s under QEMU TCG, more loaded
@pytest.mark.parametrize("argv,names,where", CASES, ids=_ids())
def test_bad_input_on_xen(argv, names, where, on_xen):
    if where == "sim":
        pytest.skip("a rule of the simulator")
    check(argv, names, *on_xen[tuple(argv)])


@pytest.mark.xen
def test_bad_input_on_xen_through_a_fresh_process():
    """Two cases through a whole new `python3 -m xenevt` process, as a user types them."""
    if not HAVE_XEN:
        pytest.skip("not running on Xen")
    env = _env()
    check(["status", "x"], "'x'", *_run(["status", "x"], env))
    check(["-d", "31999", "list"], "31999", *_run(["-d", "31999", "list"], env))
