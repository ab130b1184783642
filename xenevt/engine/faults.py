"""Fault switches: a historical bug's order of operations put back, for the replays (xenevt/replay).

Each switch is named after the bug it brings back; the C engine (csrc/fifo_*.c) and the Python reference test the
same bit, and call the same hook at the bug's racy point, where a replay runs the other side's step: the
interleaving that exposed the bug, forced rather than hoped for.  Every switch is off unless ``switched_on`` is in
force, in this process only; only the simulator's engine reads them, so nothing reaches a real hypervisor.  Some
bugs were in the toolstack's or the guest kernel's Python-side code of the simulator: their switches are bits
above ``C_FAULTS`` and read with ``on()`` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

# the engine's switches: the C header's XE_FAULT_* values (tests/test_replay.py holds them equal); bits 0-15
READY_EVERY_ADD = 1 << 0
OLD_TAIL_LINKED = 1 << 1   # Xen before e33d4257fc: a port moved to another queue stays its old queue's tail
PENDING_UNQUEUED = 1 << 2  # Xen before 8aa0e9d2d1: PENDING set even where the event cannot be queued
NO_PAGE_DROPPED = 1 << 3   # Xen before 917c123029: an event for a port without an event-array page dropped
# Linux's 2-level upcall (the engine's guest side, csrc/twolevel.c): cpu_evtchn_mask set up for the first 64 ports
# only, so a port past them bound by no explicit affinity is on no CPU (before b0097adeec27, 2009)
L2_CPU_MASK_UNSET = 1 << 4
# Linux's 2-level unmask resending a pending port on the vCPU it runs on, whichever vCPU the port is bound to: its
# selector bit and upcall flag set there, never on the port's own (the sparse tree's unmask_evtchn(), before Xen
# 3e61615263 added EVTCHNOP_unmask for another vCPU's port, 2005)
L2_UNMASK_HERE = 1 << 5
C_FAULTS = 0xFFFF  # bits the C engine knows; above, the simulator's Python-side switches:
# bits 16-23 Xen's Python-side code (xenevt/sim: allocation, close, reset), bits 24-31 Linux's (the guest kernel,
# libxenevtchn)
# Xen's Python-side switches (xenevt/sim), bits 16-23:
REUSE_BUSY_PORT = 1 << 16   # get_free_port() hands out a freed port still LINKED (before Xen 78e24c269b)
RESET_UNLOCKED = 1 << 17    # EVTCHNOP_reset closes unlocked and switches ABI whatever opened meanwhile (XSA-343)
# the 2-level port limit recorded when the domain was created, before its guest's bitness was known: a 64-bit
# guest's 4096 for a 32-bit guest too, whose bitmaps hold 1024 (Xen before 62bcdc4edb, XSA-342)
COMPAT_LIMIT_AT_CREATE = 1 << 18
CLOSE_KEEPS_PENDING = 1 << 19  # evtchn_close() leaves the 2-level pending bit set (before Xen 120785c177, 2008)
# Mini-OS (Xen's stub-domain kernel; a replay's bare domain is it, its script Mini-OS's calls), from bit 20:
MINIOS_BIND_CLEARS_PENDING = 1 << 20  # evtchn_bind_interdomain() clears the new port's pending bit (before b9d1950675)
# Linux's Python-side switches: bits 24-27 its lateeoi (xenevt/sim/lateeoi.py), 28-31 its CPU hotplug and close
# an unmask (the irq core's enable_dynirq) clears the event channel's one mask whatever masked it, an EOI pending
# included: drivers/xen/events before 25da4618af24 (mask reasons), 2021
LINUX_UNMASK_DESPITE_EOI = 1 << 24
# a PV device's channel bound with the plain edge chip at both ends (bind_interdomain_evtchn_to_irqhandler): each
# event acked, handled and unmasked at once, never counted spurious nor its EOI delayed, no xenbus counters: Linux
# before XSA-332's lateeoi (54c9de89895e, 23025393dbeb, 5f7f77400ab5, 2020) and XSA-391's frontends (2021)
LINUX_NO_LATEEOI = 1 << 25
CPU_DEAD_NO_DRAIN = 1 << 28  # an offlined CPU's queues left as they are, its closed ports LINKED (before fcdf31a7c162)

# hook points: the C header's XE_POINT_* values
POINT_BEFORE_READY = 1
POINT_L2_CPU_MASK = 2       # asks: is this pending port of the upcall's vCPU on no CPU in cpu_evtchn_mask? (nonzero)
# the Python-side switches' points (no C counterpart), from 64 up
POINT_RESET_CLOSED = 64     # EVTCHNOP_reset: every port closed, the lock let go, the ABI not yet switched; between
# two intents, so this hook may make a hypercall (the racing vCPU's), where every other point's may not

Hook = Callable[[int, int], "int | None"]  # (an answer only where the point asks one; None is 0)

_mask = 0
_hook: Hook | None = None
_raised: list[BaseException] = []


def on(fault: int) -> bool:
    """Whether ``fault`` is switched on (in a replay)."""
    return bool(_mask & fault)


def active() -> int:
    return _mask


def point(where: int, port: int) -> int:
    """The racy point ``where`` reached with a fault on: the replay's step runs here, and says its answer where the
    point asks (the reference's call; the C engine's comes through xe_fault_hook_py)."""
    return (_hook(where, port) or 0) if _hook is not None else 0


def _from_c(where: int, port: int) -> int:
    try:
        return point(where, port) & 0xFFFFFFFF
    except BaseException as e:  # (C cannot carry it: kept, and raised when the switch goes off)
        _raised.append(e)
        return 0


@contextmanager
def switched_on(mask: int, hook: Hook | None = None) -> Iterator[None]:
    """Faults ``mask`` on, ``hook`` called at their points, until the block ends; an exception the hook raised
    under C is raised at the end."""
    global _mask, _hook
    if _mask:
        raise RuntimeError("fault switches are on already (one replay at a time)")
    from .._native import lib

    _mask, _hook = mask, hook
    lib.xe_faults_set(mask & C_FAULTS, _c_hook() if hook is not None else _ffi_null())
    try:
        yield
    finally:
        lib.xe_faults_set(0, _ffi_null())
        _mask, _hook = 0, None
        if _raised:
            e = _raised.pop()
            _raised.clear()
            raise e


def _ffi_null():
    from .._native import ffi

    return ffi.NULL


_registered = False


def _c_hook():
    """The C engine's pointer to ``_from_c`` (cffi's extern "Python", registered once)."""
    global _registered
    from .._native import ffi, lib

    if not _registered:
        ffi.def_extern(name="xe_fault_hook_py")(_from_c)
        _registered = True
    return lib.xe_fault_hook_py
