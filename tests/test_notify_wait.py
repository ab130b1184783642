"""A round trip's one call, ``Host.notify_wait``: the send and the wait for the answer, on the simulator (its C
send and upcall loop, and the Python reference) and through the xen backend over the simulator's libxenevtchn
(one C call, csrc/evtchn_loop.c xe_evtchn_notify_consume, once the port has been sent on)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import xenevt
from xenevt.errors import ChannelError
from xenevt.sim.host import create_host

from .test_simlib import libpath  # noqa: F401  (the fixture)


@pytest.mark.parametrize("hot", ["c", "python"])
def test_notify_wait_is_a_notify_then_the_events_it_raised(tmp_path, monkeypatch, hot):
    if hot == "python":
        monkeypatch.setenv("XENEVT_SIM_HOT", "python")
    with xenevt.open("sim", str(tmp_path), create=True) as host:
        p = host.bind_unbound(1, 0)
        q = host.bind_interdomain(0, 1, p)
        assert host.notify_wait(0, q, 1, timeout=1) == [p]  # dom0 sends, dom1 takes it
        assert list(host.events(0, count=1, timeout=1)) == [q]  # (the bind left q pending)
        for _ in range(50):
            assert host.notify_wait(1, p, 0, timeout=1) == [q]
            assert host.notify_wait(0, q, 1, timeout=1) == [p]
        assert host.notify_wait(1, p, 0, timeout=0) == [q]
        host.mask(0, q)
        assert host.notify_wait(1, p, 0, timeout=0.05) == []  # masked: raised, nothing delivered in time
        assert host.status(0, q).flags["pending"]
        host.close(0, q)
        with pytest.raises(ChannelError, match="ENOTCONN"):
            host.notify_wait(1, p, 0, timeout=0)
        with pytest.raises(ChannelError, match="port 999 of domain 1"):
            host.notify_wait(1, 999, 0, timeout=0)


SCRIPT = textwrap.dedent("""
    import sys
    from xenevt.backend.xen import XenBackend
    from xenevt.errors import ChannelError

    xen = XenBackend()
    a = xen.bind_unbound(0, 0)
    b = xen.bind_interdomain(0, 0, a)
    assert xen.consume(0, 0, 1, 5.0) == [b]  # (Xen leaves the new interdomain end pending once)
    for _ in range(int(sys.argv[1])):
        assert xen.notify_wait(0, b, 0, 0, 1, 5.0) == [a]
        assert xen.notify_wait(0, a, 0, 0, 1, 5.0) == [b]
    assert xen.notify_wait(0, a, 0, 0, 4, 0.05) == [b]
    xen.close(0, a)
    try:
        xen.notify_wait(0, a, 0, 0, 1, 0)
    except ChannelError as e:
        print("refused:", e)
    print("ok")
""")


def test_notify_wait_through_the_xen_backend_over_the_sim_library(libpath, tmp_path):  # noqa: F811
    create_host(str(tmp_path))
    env = dict(os.environ, LD_LIBRARY_PATH=libpath, XENEVT_STATE=str(tmp_path), XENEVT_SELF_DOMID="0")
    r = subprocess.run([sys.executable, "-c", SCRIPT, "200"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "ok" and lines[0].startswith("refused: cannot notify port 1 of domain 0"), r.stdout
