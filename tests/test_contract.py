"""One contract, every backend: the sim backend, the xen backend over libxenevtchn-sim.so,
and the real host where /dev/xen/evtchn exists (XENEVT_REQUIRE_XEN=1 makes its absence a failure).

Only what real Xen lets a dom0 process do is in the contract: loopback channels
bound in its own domain, delivery of their events, remote notify, status and
listing of ports, errors with errno, domain and port.
"""

from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from xenevt.backend import select_backend
from xenevt.errors import BackendUnavailable, ChannelError, XenevtError
from xenevt.sim.host import create_host

HAVE_XEN = os.path.exists("/dev/xen/evtchn")
REQUIRE_XEN = os.environ.get("XENEVT_REQUIRE_XEN") == "1"


@pytest.fixture
def simlib(tmp_path, monkeypatch):
    """The xen backend's libraries resolved to the simulator's, acting as dom0 on a fresh host."""
    from xenevt.backend.xen import libs
    from xenevt.sim import libglue
    from xenevt.sim import simlib as builder

    try:
        path = builder.libpath()
    except XenevtError as e:
        pytest.skip(str(e))
    monkeypatch.setenv("LD_LIBRARY_PATH", path)
    monkeypatch.setenv("XENEVT_SELF_DOMID", "0")
    monkeypatch.setattr(libs, "_loaded", {})
    libglue.reset()
    yield path
    libglue.reset()


@pytest.fixture(params=["sim", "xen-simlib", "xen-real"])
def backend(request, tmp_path, monkeypatch):
    state = str(tmp_path / "state")
    create_host(state, nr_domains=2, nr_vcpus=2)
    monkeypatch.setenv("XENEVT_STATE", state)
    if request.param == "sim":
        b = select_backend("sim", state_dir=state)
    elif request.param == "xen-simlib":
        request.getfixturevalue("simlib")
        b = select_backend("xen")
        assert "simlib" in b.info()["libraries"]["xenevtchn"]
    else:
        if not HAVE_XEN:
            if REQUIRE_XEN:
                pytest.fail("XENEVT_REQUIRE_XEN=1 but /dev/xen/evtchn does not exist")
            pytest.skip("not running on Xen")
        b = select_backend("xen")
    yield b
    b.shutdown()


def loopback(b):
    """A dom0 loopback channel: P waits for dom0, Q connects to it; Xen leaves Q pending once."""
    p = b.bind_unbound(0, 0)
    q = b.bind_interdomain(0, 0, p)
    assert b.consume(0, 0, 16, 5.0) == [q]
    return p, q


def test_loopback_channel_status(backend):
    p = backend.bind_unbound(0, 0)
    st = backend.status(0, p)
    assert (st.state, st.remote_domain) == ("unbound", 0)
    q = backend.bind_interdomain(0, 0, p)
    assert q != p
    a, b = backend.status(0, p), backend.status(0, q)
    assert (a.state, a.remote_domain, a.remote_port) == ("interdomain", 0, q)
    assert (b.state, b.remote_domain, b.remote_port) == ("interdomain", 0, p)
    listed = {st.port: st.state for st in backend.list_ports(0)}
    assert listed[p] == listed[q] == "interdomain"


def test_events_are_delivered_both_ways_and_coalesce(backend):
    p, q = loopback(backend)
    for _ in range(20):
        backend.notify(0, q)
        assert backend.consume(0, 0, 16, 5.0) == [p]
        backend.notify(0, p)
        assert backend.consume(0, 0, 16, 5.0) == [q]
    assert backend.consume(0, 0, 16, 0.05) == []


def test_the_event_xen_raises_on_each_new_interdomain_end_arrives(backend):
    """Raised inside the bind, before the process knows its port: it must still reach the process (a race the
    simulator's library once lost about one time in four)."""
    for _ in range(40):
        p, q = loopback(backend)
        backend.close(0, q)
        backend.close(0, p)


def test_an_event_on_a_port_closed_before_it_was_read_is_not_delivered(backend):
    """The kernel's queue (or the simulator's) may still hold a port its process has unbound: consume drops it."""
    p, q = loopback(backend)
    backend.notify(0, q)
    backend.close(0, p)
    assert backend.consume(0, 0, 16, 0.2) == []
    r = backend.bind_unbound(0, 0)  # the handle still receives: a new channel's event arrives alone
    s = backend.bind_interdomain(0, 0, r)
    assert backend.consume(0, 0, 16, 5.0) == [s]


class Alarm:
    """SIGALRM once after ``after`` seconds, its handler counting or raising; restored on exit."""

    def __init__(self, after: float, raising: bool = False):
        self.after, self.raising, self.fired = after, raising, 0

    def _handler(self, signum, frame):
        self.fired += 1
        if self.raising:
            raise TimeoutError("alarm")

    def __enter__(self):
        self._old = signal.signal(signal.SIGALRM, self._handler)
        signal.setitimer(signal.ITIMER_REAL, self.after)
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old)


def test_a_signal_while_waiting_runs_its_handler_and_the_wait_goes_on(backend):
    """A handler that returns neither ends the wait early nor starts it again (the wait is the caller's)."""
    p, q = loopback(backend)
    with Alarm(0.05) as alarm:
        t0 = time.monotonic()
        assert backend.consume(0, 0, 16, 0.5) == []
        took = time.monotonic() - t0
    assert alarm.fired == 1
    assert 0.4 <= took < 5.0, took  # not cut short at the signal; the bound above is only "ended at all"
    backend.notify(0, q)
    assert backend.consume(0, 0, 16, 5.0) == [p]


def test_a_handler_that_raises_ends_the_wait(backend):
    loopback(backend)
    with Alarm(0.05, raising=True), pytest.raises(TimeoutError):
        backend.consume(0, 0, 16, 10.0)


def test_closing_one_end_leaves_the_other_unbound(backend):
    p, q = loopback(backend)
    backend.close(0, q)
    assert backend.status(0, q).state == "closed"
    st = backend.status(0, p)
    assert (st.state, st.remote_domain) == ("unbound", 0)


def test_notify_to_a_remote_unbound_port(backend):
    p = backend.bind_unbound(0, 0)
    r = backend.notify_remote(0, 0, p)
    assert (r.target_domain, r.target_port) == (0, p)
    assert backend.consume(0, 0, 16, 5.0) == [p]
    assert backend.status(0, p).state == "unbound"  # the temporary end is gone again


def test_priority_and_vcpu_of_own_ports(backend):
    p, _ = loopback(backend)
    backend.set_priority(0, p, 3)
    backend.bind_vcpu(0, p, 1)
    assert backend.status(0, p).vcpu == 1
    with pytest.raises(ChannelError) as e:
        backend.set_priority(0, p, 16)
    assert e.value.errno == errno.EINVAL and e.value.port == p


def test_errors_carry_errno_domain_and_port(backend):
    with pytest.raises(ChannelError) as e:
        backend.status(0, 99999)
    assert (e.value.errno, e.value.domain, e.value.port) == (errno.EINVAL, 0, 99999)
    assert "invalid port" in str(e.value) or "out of range" in str(e.value)
    with pytest.raises(ChannelError) as e:
        backend.list_ports(7)
    assert (e.value.errno, e.value.domain) == (errno.ESRCH, 7) and "no such domain" in str(e.value)
    with pytest.raises(ChannelError) as e:
        backend.bind_interdomain(0, 0, 4000)  # nothing waits there
    assert e.value.errno == errno.EINVAL and e.value.port == 4000


# --- errors that only the library path has (through the simulator library) ----------------------------
def test_xen_backend_without_a_host_says_not_running_on_xen(simlib, tmp_path, monkeypatch):
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path / "none"))
    with pytest.raises(BackendUnavailable, match="not running on Xen"):
        select_backend("xen")


def test_xen_backend_unprivileged_domain_gets_eperm(simlib, tmp_path, monkeypatch):
    create_host(str(tmp_path / "s"))
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path / "s"))
    monkeypatch.setenv("XENEVT_SIM_DOMAIN", "1")
    monkeypatch.setenv("XENEVT_SELF_DOMID", "1")
    b = select_backend("xen")
    try:
        with pytest.raises(ChannelError) as e:
            b.bind_unbound(0, 1)  # dom1 allocating in dom0: needs privilege
        assert e.value.errno == errno.EPERM and e.value.domain == 0 and "run as root" in str(e.value)
        port = b.bind_unbound(1, 0)
        assert b.status(1, port).state == "unbound"
    finally:
        b.shutdown()


def test_xen_backend_names_what_only_the_kernel_can_do(simlib, tmp_path, monkeypatch):
    create_host(str(tmp_path / "s"))
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path / "s"))
    b = select_backend("xen")
    try:
        with pytest.raises(BackendUnavailable, match="only the guest kernel"):
            b.bind_ipi(0)
        with pytest.raises(BackendUnavailable, match="no mask call"):
            b.mask(0, 1)
        p = b.bind_unbound(1, 0)  # another domain's port, allocated through libxenctrl
        with pytest.raises(ChannelError, match="notify --to 1:") as e:
            b.notify(1, p)
        assert e.value.errno == errno.EPERM
        assert b.domains() == [0, 1]
    finally:
        b.shutdown()


def test_frames_map_live_through_privcmd(backend, request):
    """The simulator's frames (see `xenevt sim info --json`) map through the same call as Xen's."""
    if "real" in request.node.callspec.id:
        pytest.skip("a real guest's frame numbers are not known here")
    from xenevt.sim.host import SimHost

    p, q = loopback(backend)  # both ends bound, unmasked and idle; everything consumed
    with SimHost(os.environ["XENEVT_STATE"]) as h:
        gfns = h.gfns(0)
    page, cb = backend.map_frames(0, [gfns["event_array"][0], gfns["control_blocks"][0][0]])

    def word(port):
        return int.from_bytes(page[4 * port: 4 * port + 4], "little")

    assert word(p) == word(q) == 0  # bound and unmasked
    assert word(1000) == 1 << 30  # never bound: MASKED, as Linux initialises the page
    assert int.from_bytes(cb[:4], "little") == 0  # READY clear: nothing left to consume
    with pytest.raises(ChannelError) as e:
        backend.map_frames(0, [0x42])
    assert e.value.errno == errno.EINVAL and e.value.domain == 0
    with pytest.raises(ChannelError) as e:
        backend.map_frames(9, [gfns["event_array"][0]])
    assert e.value.errno == errno.ESRCH


def test_missing_xen_libraries_are_named_with_their_package(monkeypatch):
    """No Xen library installed: one line naming the file and the Debian package, never an import error."""
    from xenevt.backend.xen import libs

    monkeypatch.setattr(libs, "_loaded", {})
    monkeypatch.setitem(libs.LIBRARIES, "xenevtchn", ("libxenevtchn-absent.so.9", "libxenevtchn1"))
    with pytest.raises(BackendUnavailable) as e:
        select_backend("xen")
    text = str(e.value)
    assert "libxenevtchn-absent.so.9 is not installed (Debian package libxenevtchn1)" in text
    if not HAVE_XEN:
        assert text.startswith("not running on Xen: /dev/xen/evtchn does not exist")
