"""libxenevtchn-sim.so: unmodified C programs written against libxenevtchn run on the simulator."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest

from xenevt.errors import XenevtError
from xenevt.sim.host import SimHost, create_host

HERE = os.path.dirname(os.path.abspath(__file__))
XENEVTCHN_H = "/usr/include/xenevtchn.h"


@pytest.fixture(scope="module")
def libpath():
    r = subprocess.run([sys.executable, "-m", "xenevt", "sim", "libpath"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(r.stderr.strip())
    path = r.stdout.strip()
    assert os.path.exists(os.path.join(path, "libxenevtchn.so.1"))
    return path


@pytest.fixture(scope="module")
def pingpong(libpath, tmp_path_factory):
    """The C program, built against the real xenevtchn.h (Debian libxen-dev) and linked to the sim library."""
    if not os.path.exists(XENEVTCHN_H) or not shutil.which("gcc"):
        if os.environ.get("CI"):
            pytest.fail(f"{XENEVTCHN_H} missing: .ci/run installs libxen-dev")
        pytest.skip(f"{XENEVTCHN_H} not installed (apt install libxen-dev)")
    exe = str(tmp_path_factory.mktemp("c") / "pingpong")
    subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", os.path.join(HERE, "c", "evtchn_pingpong.c"),
                    "-o", exe, f"-L{libpath}", "-lxenevtchn"], check=True)
    return exe


def run(exe, libpath, state, *args, **env):
    e = dict(os.environ, LD_LIBRARY_PATH=libpath, XENEVT_STATE=state, **env)
    return subprocess.run([exe, *args], capture_output=True, text=True, env=e, timeout=60)


def test_soname_is_libxenevtchn_so_1(libpath):
    out = subprocess.run(["readelf", "-d", os.path.join(libpath, "libxenevtchn-sim.so")], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip("readelf not available")
    assert "Library soname: [libxenevtchn.so.1]" in out.stdout


@pytest.mark.parametrize("kernel", ["fifo", "2l"])
def test_unmodified_program_ping_pongs_on_the_simulator(pingpong, libpath, tmp_path, kernel):
    """On a FIFO kernel and on a 2-level one (xen.fifo_events=0): the program cannot tell."""
    create_host(str(tmp_path), abi=kernel)
    r = run(pingpong, libpath, str(tmp_path), "500")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "pingpong: 500 round trips on ports 1 <-> 2"
    # the program's ports were unbound when it finished: nothing left open, nothing queued or pending
    with SimHost(str(tmp_path)) as h:
        dom = h.domain(0, "t")
        assert h.list_ports(0, 0) == []
        if kernel == "fifo":
            assert dom.engine.walk()[1] == []
        else:
            assert not any(dom.mem.l2_pending()) and list(dom.mem.l2_mask()) == [(1 << 64) - 1] * 64


def test_program_without_a_host_fails_with_enoent(pingpong, libpath, tmp_path):
    r = run(pingpong, libpath, str(tmp_path / "missing"))
    assert r.returncode == 2
    assert "xenevtchn_open: No such file or directory" in r.stderr
    assert "run `xenevt sim init` first" in r.stderr  # the library's own log line (no logger given)


def test_program_acting_as_a_domu(pingpong, libpath, tmp_path):
    """A domU may bind loopback channels in its own domain: the same program runs as dom1 (a 2-level kernel)."""
    create_host(str(tmp_path), abis={1: "2l"})
    r = run(pingpong, libpath, str(tmp_path), "50", "1", XENEVT_SIM_DOMAIN="1")
    assert r.returncode == 0, r.stderr


def test_second_receiving_process_of_a_domain_gets_ebusy(pingpong, libpath, tmp_path):
    create_host(str(tmp_path))
    with SimHost(str(tmp_path)) as h:
        h.claim_vcpu(0, 0)  # this test process receives for dom0 vCPU 0
        r = run(pingpong, libpath, str(tmp_path), "5")
    assert r.returncode == 1
    assert "vCPU 0 already has a consumer" in r.stderr and "xenevtchn_fd: Device or resource busy" in r.stderr


def test_cli_xen_backend_over_the_sim_library(libpath, tmp_path):
    """The real binding code of `--backend xen`, end to end in subprocesses: bind holds, notify --to pings it."""
    create_host(str(tmp_path))
    env = dict(os.environ, LD_LIBRARY_PATH=libpath, XENEVT_STATE=str(tmp_path), XENEVT_SELF_DOMID="0")
    xe = [sys.executable, "-m", "xenevt", "--backend", "xen"]
    holder = subprocess.Popen(xe + ["bind", "unbound", "0", "--count", "2", "--timeout", "30"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = holder.stdout.readline().strip()
    assert port == "1", holder.stderr.read() if not port else port
    for _ in range(2):
        r = subprocess.run(xe + ["notify", "--to", f"0:{port}"], env=env, capture_output=True, text=True)
        assert r.returncode == 0 and "notified, closed" in r.stdout, r.stderr
    out, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err
    assert out.splitlines() == ["domain 0 vCPU 0: event on port 1"] * 2
    # the holder exited: its port is closed, as on Xen
    r = subprocess.run(xe + ["list"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "no open ports" in r.stdout
    r = subprocess.run(xe + ["status", "99999"], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == (
        "xenevt: cannot get the status of port 99999 of domain 0: invalid port or argument (EINVAL)")


def test_sim_libpath_command_reports_build_errors_in_one_line(monkeypatch, capsys):
    from xenevt.cli import main
    from xenevt.sim import simlib

    def broken(dest):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(simlib, "build", broken)
    monkeypatch.setattr(simlib, "cache_root", lambda: "/nonexistent-cache")
    assert main(["sim", "libpath"]) == 1
    err = capsys.readouterr().err
    assert err == "xenevt: cannot build libxenevtchn-sim.so: RuntimeError: no compiler\n"
    assert isinstance(simlib.SimLibError("x"), XenevtError)


def test_cli_notify_every_pings_the_peer(libpath, tmp_path):
    """dom1 (the xen backend acting as dom1) holds a port; dom0 connects and pings it every 50 ms."""
    create_host(str(tmp_path))
    base = dict(os.environ, LD_LIBRARY_PATH=libpath, XENEVT_STATE=str(tmp_path))
    xe = [sys.executable, "-m", "xenevt", "--backend", "xen"]
    holder = subprocess.Popen(xe + ["-d", "1", "--json", "bind", "unbound", "0", "-n", "3", "-t", "30"],
                              env=dict(base, XENEVT_SIM_DOMAIN="1", XENEVT_SELF_DOMID="1"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import json

    port = json.loads(holder.stdout.readline())["port"]
    pinger = subprocess.run(xe + ["bind", "interdomain", "1", str(port), "--notify-every", "0.05", "-t", "1.5"],
                            env=dict(base, XENEVT_SELF_DOMID="0"), capture_output=True, text=True, timeout=60)
    out, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["port"] for e in events] == [port] * 3 and all(e["domain"] == 1 for e in events)
    assert pinger.returncode == 0, pinger.stderr
    # the pinger's own end was left pending once by the bind (Xen's rule): it saw that event
    assert "event on port" in pinger.stdout


def test_cli_doctor_through_the_xen_backend_uses_the_e_debug_key(libpath, tmp_path):
    """On Xen, doctor presses 'e' (xc_send_debug_keys) and reads the console ring: here, the simulator's."""
    create_host(str(tmp_path))
    with SimHost(str(tmp_path)) as h:
        p1 = h.alloc_unbound(1, 1, 0)
        p0 = h.bind_interdomain(0, 0, 1, p1)
        h.mask(0, 0, p0)  # pending from the bind, and now masked: stuck
    env = dict(os.environ, LD_LIBRARY_PATH=libpath, XENEVT_STATE=str(tmp_path), XENEVT_SELF_DOMID="0")
    r = subprocess.run([sys.executable, "-m", "xenevt", "--backend", "xen", "--json", "doctor"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    import json

    out = json.loads(r.stdout)
    assert out["source"] == "xen backend + 'e' dump"
    assert [(f["rule"], f["domain"], f["ports"]) for f in out["findings"]] == [("pending-masked", 0, [p0])]


def build_c(name, libpath, tmp_path_factory):
    if not os.path.exists(XENEVTCHN_H) or not shutil.which("gcc"):
        if os.environ.get("CI"):
            pytest.fail(f"{XENEVTCHN_H} missing: .ci/run installs libxen-dev")
        pytest.skip(f"{XENEVTCHN_H} not installed (apt install libxen-dev)")
    exe = str(tmp_path_factory.mktemp("c") / name)
    subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", os.path.join(HERE, "c", f"{name}.c"), "-o", exe,
                    f"-L{libpath}", "-lxenevtchn"], check=True)
    return exe


@pytest.fixture(scope="module")
def misuse(libpath, tmp_path_factory):
    return build_c("evtchn_misuse", libpath, tmp_path_factory)


def sim_check(state):
    return subprocess.run([sys.executable, "-m", "xenevt", "--state", state, "sim", "check"], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("kernel", ["fifo", "2l"])
def test_misuse_is_answered_as_linux_evtchn_driver(misuse, libpath, tmp_path, kernel):
    """Each case of libxen.py's table from C: 5,000 open/close cycles then an event, ports of other handles,
    bad values, closed handles, exhaustion, a fork()ed child binding and receiving; then exit() holding a bound
    handle: everything given back, as the driver's release does."""
    create_host(str(tmp_path), abi=kernel)
    r = run(misuse, libpath, str(tmp_path), "all")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[-1] == "all passed", r.stdout + r.stderr
    assert not [line for line in lines if line.startswith("FAIL")]
    assert len([line for line in lines if line.startswith("ok ")]) == 41
    with SimHost(str(tmp_path)) as h:
        assert h.list_ports(0, 0) == []  # the child's ports at its exit, the parent's at its own
    c = sim_check(str(tmp_path))
    assert c.returncode == 0 and c.stdout.strip() == "clean", c.stdout + c.stderr


def test_normal_exit_leaves_nothing_for_sim_check(pingpong, libpath, tmp_path):
    create_host(str(tmp_path))
    assert run(pingpong, libpath, str(tmp_path), "20").returncode == 0
    c = sim_check(str(tmp_path))
    assert c.returncode == 0 and c.stdout.strip() == "clean", c.stdout + c.stderr


def test_a_killed_program_is_cleaned_up_by_the_next_opener(misuse, pingpong, libpath, tmp_path):
    """SIGKILL runs no release: its vCPUs name a dead consumer until the next opener of the host takes them
    over; its ports stay bound (an ordinary state, not an inconsistency) until closed."""
    create_host(str(tmp_path))
    env = dict(os.environ, LD_LIBRARY_PATH=libpath, XENEVT_STATE=str(tmp_path))
    p = subprocess.Popen([misuse, "hold"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().split() == ["holding", "1", "2"]
    finally:
        p.kill()
        p.wait(timeout=30)
    assert "a consumer that is gone" in sim_check(str(tmp_path)).stdout
    assert run(pingpong, libpath, str(tmp_path), "5").returncode == 0  # the next opener
    c = sim_check(str(tmp_path))
    assert c.returncode == 0 and c.stdout.strip() == "clean", c.stdout + c.stderr
    with SimHost(str(tmp_path)) as h:
        assert [s.port for s in h.list_ports(0, 0)] == [1, 2]


@pytest.fixture
def simlib_libs(libpath, tmp_path, monkeypatch):
    """libxenevtchn as the xen backend loads it (cffi), resolved to the sim library, on a fresh host as dom0."""
    from xenevt.backend.xen import libs
    from xenevt.sim import libglue

    create_host(str(tmp_path))
    monkeypatch.setenv("LD_LIBRARY_PATH", libpath)
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path))
    monkeypatch.setattr(libs, "_loaded", {})
    libglue.reset()
    yield libs, libs.ffi, libs.load("xenevtchn")
    libglue.reset()


def test_handles_from_python_through_the_library(simlib_libs):
    """The same rules from Python through the cffi binding (the xen backend's libs over the sim library)."""
    libs, ffi, lib = simlib_libs
    h = lib.xenevtchn_open(ffi.NULL, 0)
    other = lib.xenevtchn_open(ffi.NULL, 0)
    a = lib.xenevtchn_bind_unbound_port(other, 0)
    assert a > 0
    assert lib.xenevtchn_unmask(h, a) == 0
    assert lib.xenevtchn_notify(h, a) == -1 and ffi.errno == errno.ENOTCONN
    assert lib.xenevtchn_unbind(h, a) == -1 and ffi.errno == errno.ENOTCONN
    assert lib.xenevtchn_unbind(h, 0xFFFFFFFF) == -1 and ffi.errno == errno.EINVAL
    for _ in range(5000):
        assert lib.xenevtchn_close(lib.xenevtchn_open(ffi.NULL, 0)) == 0
    b = lib.xenevtchn_bind_interdomain(h, 0, a)
    assert b > 0
    assert lib.xenevtchn_fd(h) >= 0 and lib.xenevtchn_pending(h) == b  # Xen raised the new end; ids past 4096
    assert lib.xenevtchn_close(h) == 0 and lib.xenevtchn_close(other) == 0
    assert lib.xenevtchn_notify(h, b) == -1 and ffi.errno == errno.EBADF


def test_setup_packages_every_source_the_library_is_built_from():
    """setup.py copies the library's C sources into the wheel by a list of its own (it cannot import xenevt while
    it builds it): held to simlib's here, in the fast suite, not only when the slow wheel test builds one."""
    import ast

    from xenevt.sim import simlib

    tree = ast.parse(open(os.path.join(os.path.dirname(__file__), "..", "setup.py")).read())
    listed = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "SIMLIB_SOURCES" for t in node.targets))
    assert sorted(listed) == sorted(simlib.C_SOURCES)
