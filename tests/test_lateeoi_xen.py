"""The evtchn driver's lateeoi order as a libxenevtchn program sees it, on real Xen and on the simulator alike.

Since XSA-332 Linux's /dev/xen/evtchn binds every port with the lateeoi chip: a port it delivers is masked (the
EOI-pending reason) before its PENDING is cleared, and stays masked until the program's xenevtchn_unmask (the EOI).
So the peer's notifies meanwhile leave the port pending, masked and never LINKED, and the EOI delivers them once.
``PROGRAM`` checks that through ctypes and xenevt's own status reads; it runs against the simulator's library here
(LD_LIBRARY_PATH=$(xenevt sim libpath)), and in dom0 against the real library (xen-ci: marked ``xen``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from xenevt.sim.host import create_host

PROGRAM = r'''
import ctypes, json, select, sys
import xenevt

lib = ctypes.CDLL("libxenevtchn.so.1")
lib.xenevtchn_open.restype = ctypes.c_void_p
lib.xenevtchn_open.argtypes = [ctypes.c_void_p, ctypes.c_uint]
for name in ("xenevtchn_fd", "xenevtchn_pending", "xenevtchn_close"):
    getattr(lib, name).argtypes = [ctypes.c_void_p]
for name in ("xenevtchn_notify", "xenevtchn_unmask", "xenevtchn_bind_unbound_port"):
    getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_uint]
lib.xenevtchn_bind_interdomain.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]

xce = lib.xenevtchn_open(None, 0)
assert xce, "xenevtchn_open failed"
a = lib.xenevtchn_bind_unbound_port(xce, 0)
b = lib.xenevtchn_bind_interdomain(xce, 0, a)
assert a > 0 and b > 0, (a, b)
fd = lib.xenevtchn_fd(xce)


def take(timeout=5.0):
    """The next port delivered, or None (no EOI is made here)."""
    if not select.select([fd], [], [], timeout)[0]:
        return None
    return lib.xenevtchn_pending(xce)


def flags(port):
    with xenevt.open() as host:
        f = host.status(0, port).flags
    return {k: bool(f.get(k)) for k in ("pending", "masked", "linked")}


seen = {}
assert take() == b  # Xen leaves the new interdomain end pending once
lib.xenevtchn_unmask(xce, b)
lib.xenevtchn_notify(xce, b)  # b's peer is a: raised on a
seen["delivered"] = take()
seen["after_delivery"] = flags(a)  # masked for the EOI, acked
for _ in range(5):
    lib.xenevtchn_notify(xce, b)
seen["while_eoi_pending"] = flags(a)  # pending behind the mask, never LINKED
seen["nothing_before_eoi"] = take(0.3)
lib.xenevtchn_unmask(xce, a)  # the EOI: the five coalesced into one event, delivered once
seen["after_eoi"] = take()
seen["again_before_eoi"] = take(0.3)
lib.xenevtchn_unmask(xce, a)
lib.xenevtchn_unmask(xce, a)  # (no EOI outstanding: the driver's write() skips it)
seen["settled"] = flags(a)
seen["ports"] = [a, b]
lib.xenevtchn_close(xce)
print(json.dumps(seen))
'''


def observe(env: dict) -> dict:
    r = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def check(seen: dict) -> None:
    a, _ = seen["ports"]
    assert seen["delivered"] == a
    assert seen["after_delivery"] == {"pending": False, "masked": True, "linked": False}
    assert seen["while_eoi_pending"] == {"pending": True, "masked": True, "linked": False}
    assert seen["nothing_before_eoi"] is None
    assert seen["after_eoi"] == a and seen["again_before_eoi"] is None
    assert seen["settled"] == {"pending": False, "masked": False, "linked": False}


def test_on_the_simulator_the_evtchn_driver_masks_until_the_eoi(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xenevt", "sim", "libpath"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(r.stderr.strip())
    create_host(str(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("XENEVT_")}
    env.update(LD_LIBRARY_PATH=r.stdout.strip(), XENEVT_STATE=str(tmp_path), XENEVT_BACKEND="sim")
    check(observe(env))


@pytest.mark.xen
@pytest.mark.skipif(not os.path.exists("/dev/xen/evtchn"), reason="not running on Xen")
def test_on_xen_the_evtchn_driver_masks_until_the_eoi():
    """In dom0 (root: its own event words are read through /proc/kcore for the flags); xen-ci runs it when
    ci/xen/init.sh lists this file (its -k "test_on_xen" selects it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XENEVT_")}
    env["XENEVT_BACKEND"] = "xen"
    check(observe(env))
