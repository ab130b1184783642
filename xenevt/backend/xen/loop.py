"""The xen backend's per-event work in C (csrc/evtchn_loop.c): a send, and the loop that polls the evtchn fd,
reads a port and unmasks it, over the libxenevtchn functions libs.py dlopened.

Under QEMU's TCG each Python-level library call (libffi, a poll object, the clock) costs tens of microseconds, as
much as the system call it wraps; one C call per batch leaves the same system calls a C program makes.  The
ports this handle bound are a bitmap the C side reads (the kernel's ring may carry ports we have since unbound).
"""

from __future__ import annotations

import errno

from ..._native import ffi, lib
from ...errors import channel_error
from . import libs

CALLS = {lib.XE_CALL_POLL: "wait for events of", lib.XE_CALL_PENDING: "read events of",
         lib.XE_CALL_UNMASK: "unmask", lib.XE_CALL_NOTIFY: "notify"}
BATCH = 64  # events one call may return without a buffer of its own
_consume, _INTR, _unpack = lib.xe_evtchn_consume, lib.XE_EVTCHN_INTR, ffi.unpack  # (looked up once)


def _address(cdata) -> int:
    return int(libs.ffi.cast("uintptr_t", cdata))


class EventLoop:
    """One xenevtchn handle's sends and consume loop, and the set of ports it owns."""

    # (the backend's send and a loop's consume call these with .ev, .out and .ms themselves: one frame less)
    c_notify = staticmethod(lib.xe_evtchn_notify)
    c_consume = staticmethod(_consume)
    c_notify_consume = staticmethod(lib.xe_evtchn_notify_consume)
    unpack = staticmethod(_unpack)

    def __init__(self, evtchn, handle, fd: int):
        self.ev = ffi.new("xe_evtchn *")
        self._own = ffi.new("uint8_t[]", lib.XE_EVTCHN_MAX_PORTS // 8)
        self.out = ffi.new("uint32_t[]", BATCH)
        self.timeout: float | None = None
        self.ms = -1  # the last timeout asked for, and in poll's milliseconds
        ev = self.ev
        ev.handle = ffi.cast("void *", _address(handle))
        ev.fd = fd
        ev.notify_fn = ffi.cast("void *", _address(evtchn.xenevtchn_notify))
        ev.pending_fn = ffi.cast("void *", _address(evtchn.xenevtchn_pending))
        ev.unmask_fn = ffi.cast("void *", _address(evtchn.xenevtchn_unmask))
        ev.own = self._own

    def own(self, port: int, owned: bool = True) -> None:
        if 0 <= port < lib.XE_EVTCHN_MAX_PORTS:
            bit = 1 << (port & 7)
            self._own[port >> 3] = self._own[port >> 3] | bit if owned else self._own[port >> 3] & ~bit

    def error(self, domain: int):
        """The ChannelError of the call that failed last (its errno, what it was doing, the port)."""
        ev = self.ev
        port = ev.failed_port if ev.failed_port >= 0 else None
        err = ev.err or errno.EIO
        return channel_error(CALLS.get(ev.failed_call, "receive events of"), err, libs.reason(err), domain=domain,
                             port=port)

    def notify(self, domain: int, port: int) -> None:
        if lib.xe_evtchn_notify(self.ev, port) < 0:
            raise self.error(domain)

    def consume(self, domain: int, max_events: int, timeout: float | None) -> list[int]:
        """Up to ``max_events`` ports, waiting at most ``timeout`` seconds (None: for ever) for the first."""
        ms = self.wait_ms(timeout)
        out = self.out if max_events <= BATCH else ffi.new("uint32_t[]", max_events)
        return self.finish(domain, out, max_events, _consume(self.ev, out, max_events, ms))

    def wait_ms(self, timeout: float | None) -> int:
        """poll's milliseconds for ``timeout`` seconds (None: -1, no limit), rounded up; the last one is kept."""
        if timeout != self.timeout:  # (a loop asks with the same timeout each time)
            self.ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
            self.timeout = timeout
        return self.ms

    def notify_consume(self, domain: int, port: int, max_events: int, timeout: float | None) -> list[int]:
        """A send on ``port`` and then ``consume``, in one C call (a round trip's half)."""
        ms = self.wait_ms(timeout)
        out = self.out if max_events <= BATCH else ffi.new("uint32_t[]", max_events)
        return self.finish(domain, out, max_events, lib.xe_evtchn_notify_consume(self.ev, port, out, max_events, ms))

    def finish(self, domain: int, out, max_events: int, n: int) -> list[int]:
        """The ports of a consume call that returned ``n``: after a signal (its handler has run, and may have
        raised) it waits again for what is left of the time; a failure is raised."""
        while n < 0:
            if n != _INTR:
                raise self.error(domain)
            n = _consume(self.ev, out, max_events, self.ev.left_ms)
        return _unpack(out, n)
