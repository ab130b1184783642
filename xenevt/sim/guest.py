"""The simulated guest kernel (Linux drivers/xen/events/): growing the array, mask and unmask, consuming.

Each domain's kernel is on the ABI it chose at boot (FIFO, or 2-level as with
``xen.fifo_events=0``; domain.kernel_boot): consuming runs the FIFO engine's
queue loop or the 2-level engine's upcall scan, with the same batches.

One consumer per vCPU, as one upcall handler runs per CPU: a byte-range lock
on the consumer lock file says which process it is, and a consumer killed
mid-batch is noticed (its pid with no lock) and its vCPU mended: on FIFO its
queues (check.repair_vcpu_queues); on 2-level the selector bits and upcall
flag it took (check.repair_vcpu_l2).  What a killed 2-level consumer can
leave, and why the rest needs nothing:

* the upcall flag cleared and the selector not yet taken, or the selector
  bits given back by a batch limit without the upcall set again: selector
  bits with no upcall (the guest would not look) -- the upcall is set again;
* the selector taken (xchg) and words not yet scanned: pending, unmasked
  ports no selector bit announces -- each such word's bit is set again;
* a pending bit cleared (acknowledged) for a port it then died holding: that
  event went with the dead consumer, as a FIFO event it had unlinked does;
* the saved scan position half written (word stored, bit not): both halves
  are in range whatever the instant, so the next scan merely starts elsewhere.
"""

from __future__ import annotations

import errno
import time

from .. import abi
from ..engine import Consume
from ..engine.codes import SP, engine_error
from ..engine.layout import ABI_FIFO, VCPU_NEVER_UP, VCPU_ONLINE
from ..errors import channel_error
from . import hot
from .access import Access
from .consumers import Consumers
from .domain import SimDomain
from .effects import Effects
from .hotpath import HotPath
from .stats import Stats
from .store import HostFile

CONSUME_BATCH = 256
CONSUME_MAX = 4096  # the C loop's batch limit (hot.HotHost's buffer); larger asks go the Python way
WAKE = 1.0  # a consumer's longest sleep before it checks that its host was not replaced (s)
_hot_consume, _unpack, _monotonic = hot.consume, hot.unpack, time.monotonic


def refuse_down(dom: SimDomain, vcpu: int, call: str) -> None:
    """No upcall handler runs on a vCPU that is down or was never brought up (the C loop leaves it to this)."""
    state = dom.mem.vcpu_state(vcpu) if 0 <= vcpu < dom.mem.nr_vcpus else VCPU_ONLINE
    if state != VCPU_ONLINE:
        how = "never brought up" if state == VCPU_NEVER_UP else "down"
        raise channel_error(call, errno.EINVAL, f"vCPU {vcpu} is {how}: no upcall handler runs on it (xenevt sim "
                            f"vcpu up {dom.domid} {vcpu})", domain=dom.domid, vcpu=vcpu)


class GuestKernel:
    """The guest's part of the host: what Linux's events_fifo.c, events_2l.c and events_base.c do with its own
    words and queues (the consumer of each vCPU, mask, unmask), over the open ``file``."""

    def __init__(self, file: HostFile, access: Access, effects: Effects, consumers: Consumers, hot: HotPath,
                 stats: Stats):
        self.file = file
        self.access = access
        self.effects = effects
        self.consumers = consumers
        self.hot = hot
        self.stats = stats

    def unmask(self, caller: int, domid: int, port: int) -> None:
        """The guest's unmask: locally if not pending, else EVTCHNOP_unmask (Xen relinks).  One C call does it
        (hot.guest_unmask); what it leaves, the Python below decides."""
        h = self.hot.get()
        if h and not self.file.depth and hot.guest_unmask(h.h, caller, domid, port) == 0:
            return
        call = "unmask"
        dom = self._own_word(caller, domid, port, call)
        if dom.mem.event_abi != ABI_FIFO:
            rc = dom.l2.guest_unmask(port)
            if rc < 0:
                raise engine_error(rc, call, domid, port)
            if rc == 0:
                with self.file.locked():
                    self.effects.raise_event(dom, port, unmask=True)
            elif rc & SP.UPCALL:
                self.effects.kick(dom, dom.mem.chan(port).notify_vcpu)
            return
        rc = dom.engine.guest_unmask(port)
        if rc < 0:
            raise engine_error(rc, call, domid, port)
        if rc == 0:
            with self.file.locked():
                self.effects.raise_event(dom, port, unmask=True)

    def mask(self, caller: int, domid: int, port: int) -> None:
        self.effects.guest_mask(self._own_word(caller, domid, port, "mask"), port)

    def _own_word(self, caller: int, domid: int, port: int, call: str) -> SimDomain:
        """What the guest's own mask and unmask need: a writable host, its own bound port, and that port's word."""
        self.file.writable()
        dom = self.access.own(caller, domid, call, port)
        self.access.chan(dom, port, call)
        if dom.mem.event_abi != ABI_FIFO:
            if port >= abi.l2_nr_channels(32 if dom.guest_32 else 64):
                raise channel_error(call, errno.EINVAL, "port is past the 2-level ABI's bitmaps"
                                    + (" (a 32-bit guest's: 1024 ports)" if dom.guest_32 else ""), domain=domid,
                                    port=port)
        elif dom.mem.word(port) is None:
            raise channel_error(call, errno.EINVAL, "port has no event word yet", domain=domid, port=port)
        return dom

    def claim_vcpu(self, domid: int, vcpu: int, caller: int | None = None) -> None:
        """One consumer per vCPU, as one upcall handler runs per CPU: a byte-range lock says who.

        Only the domain's own kernel consumes its events (``caller``, when given, must be ``domid``).  A
        consumer that finds the pid of one killed mid-batch mends the vCPU's queues before it starts.
        """
        call = "consume events of"
        self.file.writable()
        dom = self.access.own(caller, domid, call, vcpu=vcpu) if caller is not None else self.access.domain(domid, call)
        self.access.vcpu(dom, vcpu, call)
        refuse_down(dom, vcpu, call)
        self.consumers.claim(dom, vcpu, call)

    def consume(self, domid: int, vcpu: int, max_events: int = CONSUME_BATCH, timeout: float | None = 0,
                caller: int | None = None, flags: int = Consume.ACK) -> list[int]:
        """Run the guest's upcall handler for ``vcpu``; sleep up to ``timeout`` s until something arrives.

        ``flags``: what is done to each delivered port as it is taken: ``Consume.ACK`` clears PENDING (Linux's
        ack_dynirq); with ``Consume.MASK`` it is masked first (lateeoi_ack_dynirq: the EOI-pending mask, then
        the clear, so an event sent meanwhile waits behind the mask, pending and unlinked, until the EOI).

        The ABI is read on each pass: a reset (back to 2-level, then the kernel's own again) may change it
        between two batches.  A sleep longer than ``WAKE`` s is cut into slices, and after each empty one the
        host is checked to be still the one at its path (``sim init --force`` may have replaced it)."""
        if timeout is None or timeout > WAKE:
            deadline = None if timeout is None else _monotonic() + timeout
            while True:
                left = WAKE if deadline is None else min(WAKE, max(deadline - _monotonic(), 0.0))
                ports = self.consume(domid, vcpu, max_events, left, caller, flags)
                if ports or (deadline is not None and _monotonic() >= deadline):
                    return ports
                self.file.check_current()
        h = self.hot.get()
        if h and 0 < max_events <= CONSUME_MAX and (caller is None or caller == domid):  # (C checks the domain)
            bufs = h.bufs.get((domid, vcpu))  # its own: one consumer per vCPU, and threads may consume others
            if bufs is None:
                bufs = h.buffers(domid, vcpu)
            out, err = bufs
            if timeout is None:
                n = _hot_consume(h.h, domid, vcpu, flags, out, max_events, -1, err)
            elif timeout > 0:
                t0 = _monotonic()
                n = _hot_consume(h.h, domid, vcpu, flags, out, max_events, int(timeout * 1e9), err)
            else:
                n = _hot_consume(h.h, domid, vcpu, flags, out, max_events, 0, err)
            if n > 0:
                return _unpack(out, n)
            while n == hot.INTR:  # a signal while it slept: its Python handler runs here (Ctrl-C), then on
                left = -1 if timeout is None else max(int((t0 + timeout - _monotonic()) * 1e9), 0)
                n = _hot_consume(h.h, domid, vcpu, flags, out, max_events, left, err)
            if n >= 0:
                return _unpack(out, n)
            if n == -1:
                e = err
                fifo = self.file.domains[domid].mem.event_abi == ABI_FIFO
                where = f" (vCPU {vcpu}, priority {e.priority})" if fifo else f" (vCPU {vcpu})"
                raise engine_error(e.code, "consume events of", domid, e.port if fifo else None, vcpu, where)
        return self._consume(domid, vcpu, max_events, timeout, caller, flags)

    def _consume(self, domid: int, vcpu: int, max_events: int = CONSUME_BATCH, timeout: float | None = 0,
                 caller: int | None = None, flags: int = Consume.ACK) -> list[int]:
        """The upcall loop in Python: the reference, and whatever the C loop leaves (errors say which)."""
        call = "consume events of"
        dom = self.access.own(caller, domid, call, vcpu=vcpu) if caller is not None else self.access.domain(domid, call)
        deadline = None if timeout is None else time.monotonic() + timeout
        word = self.file.upcall_word(dom, vcpu)
        while True:
            seq = dom.mem.upcall_seq(vcpu)
            refuse_down(dom, vcpu, call)  # (each pass: VCPUOP_down wakes a consumer that slept on it)
            fifo = dom.mem.event_abi == ABI_FIFO
            ports, err = (dom.engine if fifo else dom.l2).consume(vcpu, flags, max_events)
            for port in ports:
                self.stats.count(domid, port, 1)
            if err[0] != 0:
                where = f" (vCPU {vcpu}, priority {err[3]})" if fifo else f" (vCPU {vcpu})"
                raise engine_error(err[0], call, domid, err[1] if fifo else None, vcpu, where)
            if ports:
                return ports
            if fifo and dom.mem.guest_ready(vcpu):
                continue  # local READY bits left: more to consume without sleeping
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            hot.sleep_word(word, seq, -1 if remaining is None else int(remaining * 1e9))  # (-EINTR: looped, so a
            # signal's Python handler runs first)
