"""The simulated guest kernel (Linux drivers/xen/events/): growing the array, mask and unmask, consuming.

Each domain's kernel is on the ABI it chose at boot (FIFO, or 2-level as with
``xen.fifo_events=0``; store.kernel_boot): consuming runs the FIFO engine's
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
import fcntl
import os
import struct
import threading
import time

from .. import abi
from ..engine import SP, Consume
from ..engine.codes import engine_error
from ..engine.layout import ABI_FIFO
from ..errors import channel_error
from . import hot
from .statefile import (
    K_PAGE,
)
from .store import SimDomain

LOCK_NAME = "consumers.lock"
CONSUME_BATCH = 256
CONSUME_MAX = 4096  # the C loop's batch limit (hot.HotHost's buffer); larger asks go the Python way
WAKE = 1.0  # a consumer's longest sleep before it checks that its host was not replaced (s)
_hot_consume, _unpack, _monotonic = hot.consume, hot.unpack, time.monotonic
_FLOCK = struct.Struct("hhqqi4x")  # struct flock (Linux, 64-bit): type, whence, start, len, pid
_LOCK_FDS: dict[tuple[int, str], int] = {}  # (pid, consumer lock path) -> its one descriptor in this process
_LOCK_FDS_GUARD = threading.Lock()


class GuestKernel:
    """The guest's part of the host: what Linux's events_fifo.c and events_base.c do."""

    def _guest_setup(self, dom: SimDomain, port: int, caller: int) -> None:
        """evtchn_fifo_setup(): grow the array, one MASKED page at a time (EVTCHNOP_expand_array), to cover
        ``port``."""
        mem = dom.mem
        while port >= mem.nr_ports:
            if mem.nr_pages >= mem.max_pages:
                raise channel_error("bind", errno.ENOSPC, "event array is at its maximum size",
                                    domain=dom.domid, port=port)
            self._transact("expand_array", caller, [(K_PAGE, dom.domid, mem.nr_pages, b"")])

    def unmask(self, caller: int, domid: int, port: int) -> None:
        """The guest's unmask: locally if not pending, else EVTCHNOP_unmask (Xen relinks).  One C call does it
        (hot.guest_unmask); what it leaves, the Python below decides."""
        h = self._hot
        if h is None:
            h = self._hot_host()
        if h and not self._depth and hot.guest_unmask(h.h, caller, domid, port) == 0:
            return
        call = "unmask"
        dom = self._own_word(caller, domid, port, call)
        if dom.mem.event_abi != ABI_FIFO:
            rc = dom.l2.guest_unmask(port)
            if rc < 0:
                raise engine_error(rc, call, domid, port)
            if rc == 0:
                with self.locked():
                    self._raise(dom, port, unmask=True)
            elif rc & SP.UPCALL:
                self._kick(dom, dom.mem.chan(port).notify_vcpu)
            return
        rc = dom.engine.guest_unmask(port)
        if rc < 0:
            raise engine_error(rc, call, domid, port)
        if rc == 0:
            with self.locked():
                self._raise(dom, port, unmask=True)

    def mask(self, caller: int, domid: int, port: int) -> None:
        self._guest_mask(self._own_word(caller, domid, port, "mask"), port)

    @staticmethod
    def _guest_mask(dom: SimDomain, port: int) -> None:
        """The guest's mask on the ABI it is on (one atomic store: no hypercall on either)."""
        (dom.engine if dom.mem.event_abi == ABI_FIFO else dom.l2).guest_mask(port)

    def _l2_announce(self, dom: SimDomain, port: int) -> bool:
        """A pending, unmasked 2-level port gets its selector bit and the upcall again (and the vCPU a kick), as
        Linux's own unmask of it does: what a raise or an upcall cut short by a kill may have left undone.
        The selector bit is set by the engine's atomic unmask (Linux's evtchn_2l_unmask; a consumer may be
        taking the selector meanwhile), the upcall by a store of 1 (what Xen's test-and-set leaves).  A mask
        the guest sets on the port at that very instant is undone: the one race left, as on Linux.
        Returns whether the port needed it."""
        l2 = dom.l2
        if l2.is_pending(port) != 1 or l2.is_masked(port) != 0:
            return False
        vcpu = dom.mem.chan(port).notify_vcpu
        if l2.guest_unmask(port) < 0:
            return False
        dom.mem.buffer[dom.mem.geometry.vcpu_info_offset(vcpu)] = 1
        self._kick(dom, vcpu)
        return True

    def _own_word(self, caller: int, domid: int, port: int, call: str) -> SimDomain:
        """What the guest's own mask and unmask need: a writable host, its own bound port, and that port's word."""
        self._writable()
        dom = self._own(caller, domid, call, port)
        self._chan(dom, port, call)
        if dom.mem.event_abi != ABI_FIFO:
            if port >= abi.EVTCHN_2L_NR_CHANNELS:
                raise channel_error(call, errno.EINVAL, "port is past the 2-level ABI's bitmaps", domain=domid,
                                    port=port)
        elif dom.mem.word(port) is None:
            raise channel_error(call, errno.EINVAL, "port has no event word yet", domain=domid, port=port)
        return dom

    def _repair_vcpu(self, dom: SimDomain, vcpu: int, claimed: bool = False) -> list[str]:
        """Mend the queues (FIFO) or the selector and upcall flag (2-level) of a vCPU that no consumer is running
        on (``claimed``: the caller holds its consumer lock and is not consuming yet); with a live consumer they
        move under us, so nothing is touched."""
        if not claimed and self._consumer_live(dom.domid, vcpu):
            return []
        from .check import repair_vcpu_l2, repair_vcpu_queues

        if dom.mem.event_abi != ABI_FIFO:
            return repair_vcpu_l2(self, dom, vcpu)
        return repair_vcpu_queues(self, dom, vcpu)

    def _recover_consumers(self) -> None:
        """A consumer killed mid-batch leaves its pid, and maybe local READY bits and heads that no longer
        match the queues (FIFO) or a selector it took (2-level): mend the vCPU and clear the pid."""
        for dom in self.domains.values():
            for v in range(dom.mem.nr_vcpus):
                pid = dom.mem.consumer(v)
                if pid and not self._consumer_live(dom.domid, v):
                    self._repair_vcpu(dom, v)
                    dom.mem.set_consumer(v, 0)
                    self.recovered.append(f"cleared vCPU {v} of domain {dom.domid}: its consumer (pid {pid}) is gone")

    def _consumer_lock_fd(self, create: bool) -> int | None:
        """The consumer lock file's descriptor, one per process and state directory, never closed: POSIX locks
        belong to the process, and closing any descriptor of the file would drop every vCPU it claimed.
        Opened through the state directory's policy (statedir.py); reading only, without write access."""
        write = create or not self.read_only
        key = (os.getpid(), os.path.join(self.dir.real, LOCK_NAME), write)
        with _LOCK_FDS_GUARD:
            fd = _LOCK_FDS.get(key)
            if fd is None:
                fd = self.dir.open(LOCK_NAME, write=write, create=create)
                if fd is None:
                    return None
                _LOCK_FDS[key] = fd
        if write:
            self._consumer_fd = fd
        return fd

    def _consumer_holder(self, domid: int, vcpu: int) -> int:
        """The pid holding vCPU ``vcpu``'s consumer lock, 0 if none (F_GETLK: a killed holder holds nothing).
        F_GETLK does not see this process's own locks."""
        fd = self._consumer_lock_fd(create=False)
        if fd is None:
            return 0
        query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, self.consumer_byte(domid, vcpu), 1, 0)
        kind, _, _, _, pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
        return 0 if kind == fcntl.F_UNLCK else pid or -1

    def _consumer_live(self, domid: int, vcpu: int) -> bool:
        """Whether some process holds vCPU ``vcpu``'s consumer lock.  A vCPU whose pid is ours is ours, so live."""
        if (domid, vcpu) in self._claimed or self.domains[domid].mem.consumer(vcpu) == os.getpid():
            return True
        return self._consumer_holder(domid, vcpu) != 0

    def consumer_live(self, domid: int, vcpu: int) -> bool:
        return self._consumer_live(domid, vcpu)

    def claim_vcpu(self, domid: int, vcpu: int, caller: int | None = None) -> None:
        """One consumer per vCPU, as one upcall handler runs per CPU: a byte-range lock says who.

        Only the domain's own kernel consumes its events (``caller``, when given, must be ``domid``).  A
        consumer that finds the pid of one killed mid-batch mends the vCPU's queues before it starts.
        """
        call = "consume events of"
        self._writable()
        dom = self._own(caller, domid, call, vcpu=vcpu) if caller is not None else self.domain(domid, call)
        self._vcpu(dom, vcpu, call)
        fd = self._consumer_lock_fd(create=True)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self.consumer_byte(domid, vcpu))
        except OSError:
            pid = self._consumer_holder(domid, vcpu) or dom.mem.consumer(vcpu)  # (the lock's word: the pid field
            # is written after the lock is taken)
            raise channel_error(call, errno.EBUSY, f"vCPU {vcpu} already has a consumer (pid {pid})",
                                domain=domid, vcpu=vcpu) from None
        prev = dom.mem.consumer(vcpu)
        if prev and prev != os.getpid():
            with self.locked():
                self._repair_vcpu(dom, vcpu, claimed=True)
            self.recovered.append(f"took over vCPU {vcpu} of domain {domid} from a consumer that is gone (pid {prev})")
        dom.mem.set_consumer(vcpu, os.getpid())
        self._claimed.add((domid, vcpu))

    def consume(self, domid: int, vcpu: int, max_events: int = CONSUME_BATCH, timeout: float | None = 0,
                caller: int | None = None) -> list[int]:
        """Run the guest's upcall handler for ``vcpu``; sleep up to ``timeout`` s until something arrives.

        The ABI is read on each pass: a reset (back to 2-level, then the kernel's own again) may change it
        between two batches.  A sleep longer than ``WAKE`` s is cut into slices, and after each empty one the
        host is checked to be still the one at its path (``sim init --force`` may have replaced it)."""
        if timeout is None or timeout > WAKE:
            deadline = None if timeout is None else _monotonic() + timeout
            while True:
                left = WAKE if deadline is None else min(WAKE, max(deadline - _monotonic(), 0.0))
                ports = self.consume(domid, vcpu, max_events, left, caller)
                if ports or (deadline is not None and _monotonic() >= deadline):
                    return ports
                self.check_current()
        h = self._hot
        if h is None:
            h = self._hot_host()
        if h and 0 < max_events <= CONSUME_MAX and (caller is None or caller == domid):  # (C checks the domain)
            bufs = h.bufs.get((domid, vcpu))  # its own: one consumer per vCPU, and threads may consume others
            if bufs is None:
                bufs = h.buffers(domid, vcpu)
            out, err = bufs
            if timeout is None:
                n = _hot_consume(h.h, domid, vcpu, out, max_events, -1, err)
            elif timeout > 0:
                t0 = _monotonic()
                n = _hot_consume(h.h, domid, vcpu, out, max_events, int(timeout * 1e9), err)
            else:
                n = _hot_consume(h.h, domid, vcpu, out, max_events, 0, err)
            if n > 0:
                return _unpack(out, n)
            while n == hot.INTR:  # a signal while it slept: its Python handler runs here (Ctrl-C), then on
                left = -1 if timeout is None else max(int((t0 + timeout - _monotonic()) * 1e9), 0)
                n = _hot_consume(h.h, domid, vcpu, out, max_events, left, err)
            if n >= 0:
                return _unpack(out, n)
            if n == -1:
                e = err
                fifo = self.domains[domid].mem.event_abi == ABI_FIFO
                where = f" (vCPU {vcpu}, priority {e.priority})" if fifo else f" (vCPU {vcpu})"
                raise engine_error(e.code, "consume events of", domid, e.port if fifo else None, vcpu, where)
        return self._consume(domid, vcpu, max_events, timeout, caller)

    def _consume(self, domid: int, vcpu: int, max_events: int = CONSUME_BATCH, timeout: float | None = 0,
                 caller: int | None = None) -> list[int]:
        """The upcall loop in Python: the reference, and whatever the C loop leaves (errors say which)."""
        call = "consume events of"
        dom = self._own(caller, domid, call, vcpu=vcpu) if caller is not None else self.domain(domid, call)
        deadline = None if timeout is None else time.monotonic() + timeout
        word = self._upcall_word(dom, vcpu)
        while True:
            seq = dom.mem.upcall_seq(vcpu)
            fifo = dom.mem.event_abi == ABI_FIFO
            ports, err = (dom.engine if fifo else dom.l2).consume(vcpu, Consume.ACK, max_events)
            for port in ports:
                self._count(domid, port, 1)
            if err[0] != 0:
                where = f" (vCPU {vcpu}, priority {err[3]})" if fifo else f" (vCPU {vcpu})"
                raise engine_error(err[0], call, domid, err[1] if fifo else None, vcpu, where)
            if ports:
                return ports
            if fifo and dom.mem.guest(vcpu)[0]:
                continue  # local READY bits left: more to consume without sleeping
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            hot.sleep_word(word, seq, -1 if remaining is None else int(remaining * 1e9))  # (-EINTR: looped, so a
            # signal's Python handler runs first)
