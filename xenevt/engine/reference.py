"""Pure-Python reference of the C engine: same operations, same results.

Slow and plain on purpose: each function is the obviously-right reading of
xen/common/event_fifo.c (hypervisor) or Linux's events_fifo.c (guest), used
to check the C code on random operation sequences (tests/test_differential.py).
Shared words are updated with plain read-modify-write: the reference is only
ever driven by one thread.
"""

from __future__ import annotations

from .. import abi
from . import faults
from .codes import CHAN_DEFERRED, SP, Err, Walk
from .domainmem import DomainMemory

Q = abi.EVTCHN_FIFO_MAX_QUEUES
LINK_MASK = abi.EVTCHN_FIFO_LINK_MASK
QUEUE_MASK = (1 << Q) - 1
BUSY_SPINS = 1_000_000


class ReferenceEngine:
    name = "python"

    def __init__(self, mem: DomainMemory):
        self.mem = mem

    def refresh(self) -> None:
        """Nothing cached: every call reads the layout afresh."""

    def close(self) -> None:
        """Nothing held beyond the DomainMemory (the native engine's counterpart releases its buffer)."""

    # --- words --------------------------------------------------------
    def _word(self, port: int) -> int | None:
        return self.mem.word(port)

    def _set(self, port: int, value: int) -> None:
        self.mem.set_word(port, value)

    def word(self, port: int) -> int | None:
        return self._word(port)

    # --- hypervisor side ------------------------------------------------
    def _set_link(self, tail: int, link: int) -> tuple[bool, bool]:
        """(linked, gave_up): link ``tail`` to ``link`` iff tail is still LINKED.

        Single-threaded, so the cmpxchg of Xen's try_set_link() cannot lose a
        race and BUSY is never needed here.
        """
        w = self._word(tail)
        if w is None or not w & abi.WORD_LINKED:  # (None: past the array, so not LINKED either)
            return False, False
        self._set(tail, (w & ~(abi.WORD_BUSY | LINK_MASK)) | link)
        return True, False

    def set_pending(self, port: int) -> int:
        mem = self.mem
        if port == 0 or port >= mem.nr_chans:
            return Err.PORT
        ch = mem.chan(port)
        v, prio = ch.notify_vcpu, ch.priority
        if v >= mem.nr_vcpus:
            return Err.VCPU
        if (prio > abi.EVTCHN_FIFO_PRIORITY_MIN or ch.last_priority > abi.EVTCHN_FIFO_PRIORITY_MIN
                or ch.last_vcpu >= mem.nr_vcpus):
            return Err.STATE
        w = self._word(port)
        if w is None:
            if faults.on(faults.NO_PAGE_DROPPED):  # (Xen before 917c123029)
                return Err.OK
            mem.update_chan(port, flags=ch.flags | CHAN_DEFERRED)
            return SP.DEFERRED
        tails = mem.tails()
        q = v * Q + prio
        old_q = ch.last_vcpu * Q + ch.last_priority
        for t in (tails[q], tails[old_q]):
            if t != 0 and self._word(t) is None:
                return Err.STATE

        cb = mem.control_block(v)
        if cb is None:  # dropped before the word is touched (Xen before 8aa0e9d2d1: after PENDING was set)
            if faults.on(faults.PENDING_UNQUEUED):
                self._set(port, w | abi.WORD_PENDING)
            return SP.NO_CONTROL
        result = 0
        if w & abi.WORD_PENDING:
            result |= SP.WAS_PENDING
        w |= abi.WORD_PENDING
        self._set(port, w)

        linked = True
        if w & abi.WORD_MASKED:
            result |= SP.MASKED
        elif w & abi.WORD_LINKED:
            result |= SP.ALREADY_LINKED
        else:
            self._set(port, w | abi.WORD_LINKED)
            if tails[old_q] == port and (old_q == q or not faults.on(faults.OLD_TAIL_LINKED)):  # (e33d4257fc)
                tails[old_q] = 0
            if old_q != q:
                mem.update_chan(port, last_vcpu=v, last_priority=prio)
                result |= SP.MOVED
            linked = False
            if tails[q] != 0:
                linked, gave_up = self._set_link(tails[q], port)
                if gave_up:
                    result |= SP.LINK_GAVE_UP
            if not linked:
                cb[2 + prio] = port
                result |= SP.NEW_HEAD
            tails[q] = port
            result |= SP.LINKED

        if linked and result & SP.LINKED and faults.on(faults.READY_EVERY_ADD):  # (Xen before 70ccddb14a)
            faults.point(faults.POINT_BEFORE_READY, port)
            linked = False
        if not linked:
            bit = 1 << prio
            if not cb[0] & bit:
                result |= SP.UPCALL
            cb[0] |= bit
        return int(result)

    def unmask(self, port: int) -> int:
        if port == 0 or port >= self.mem.nr_chans:
            return Err.PORT
        w = self._word(port)
        if w is None:
            return SP.DEFERRED
        w &= ~abi.WORD_MASKED
        self._set(port, w)
        if not w & abi.WORD_PENDING:
            return SP.NOT_PENDING
        return self.set_pending(port)

    def clear_pending(self, port: int) -> int:
        if port == 0 or port >= self.mem.nr_chans:
            return Err.PORT
        w = self._word(port)  # (DEFERRED stays: Xen never clears evtchn->pending)
        if w is not None:
            self._set(port, w & ~abi.WORD_PENDING)
        return Err.OK

    def page_added(self, index: int) -> int:
        mem = self.mem
        if index >= mem.nr_pages:
            return Err.RANGE
        first = index * abi.EVENT_WORDS_PER_PAGE
        last = min(first + abi.EVENT_WORDS_PER_PAGE, mem.nr_chans)
        raised = 0
        for port in range(max(first, 1), last):
            ch = mem.chan(port)
            if not ch.flags & CHAN_DEFERRED:
                continue
            rc = self.set_pending(port)
            if rc < 0:
                return rc
            raised += 1
        return raised

    # --- guest side -----------------------------------------------------
    def consume(self, vcpu: int, flags: int, max_events: int, max_steps: int = 1 << 30):
        """Returns (ports, (code, port, vcpu, priority)) like xe_guest_consume."""
        mem = self.mem
        out: list[int] = []
        if vcpu >= mem.nr_vcpus:
            return out, (Err.VCPU, 0, vcpu, 0)
        cb = mem.control_block(vcpu)
        if cb is None:
            return out, (Err.NO_CONTROL, 0, vcpu, 0)
        g = mem.guest(vcpu)
        if not (g[0] | cb[0]) & QUEUE_MASK:
            return out, (Err.OK, 0, 0, 0)  # nothing READY, here or kept: no upcall, nothing written
        upcall = mem.begin_upcall(vcpu)  # (the even count the last store of ready puts back: xe_upcall_begin)
        ready = (g[0] | cb[0]) & QUEUE_MASK
        cb[0] = 0
        steps = 0
        while ready and len(out) < max_events and steps < max_steps:
            steps += 1
            q = (ready & -ready).bit_length() - 1
            head = g[1 + q]
            if head == 0:
                head = cb[2 + q]
                if head == 0:
                    return self._drop(g, ready, upcall, q, out, (Err.ZERO_HEAD, 0, vcpu, q))
            port = head
            w = self._word(port)
            if w is None:
                return self._drop(g, ready, upcall, q, out, (Err.RANGE, port, vcpu, q))
            if not w & abi.WORD_LINKED:
                return self._drop(g, ready, upcall, q, out, (Err.UNLINKED, port, vcpu, q))
            link = w & LINK_MASK
            w &= ~(abi.WORD_LINKED | LINK_MASK)
            if link == 0:
                ready &= ~(1 << q)
            if w & abi.WORD_PENDING and not w & abi.WORD_MASKED:
                if flags & 2:
                    w |= abi.WORD_MASKED
                if flags & 1:
                    w &= ~abi.WORD_PENDING
                out.append(port)
            self._set(port, w)
            g[1 + q] = link
            ready |= cb[0] & QUEUE_MASK
            cb[0] = 0
        g[0] = ready | upcall
        return out, (Err.OK, 0, 0, 0)

    @staticmethod
    def _drop(g, ready, upcall, q, out, err):
        g[1 + q] = 0
        g[0] = ready & ~(1 << q) | upcall
        return out, err

    def guest_mask(self, port: int) -> int:
        w = self._word(port) if port else None
        if w is None:
            return Err.RANGE
        self._set(port, w | abi.WORD_MASKED)
        return 1 if w & abi.WORD_MASKED else 0

    def guest_unmask(self, port: int) -> int:
        w = self._word(port) if port else None
        if w is None:
            return Err.RANGE
        if not w & abi.WORD_MASKED:
            return 1
        if w & abi.WORD_PENDING:
            return 0
        if w & abi.WORD_BUSY:  # nobody else runs to clear it
            return Err.BUSY
        self._set(port, w & ~abi.WORD_MASKED)
        return 1

    def guest_clear_pending(self, port: int) -> int:
        w = self._word(port) if port else None
        if w is None:
            return Err.RANGE
        self._set(port, w & ~abi.WORD_PENDING)
        return Err.OK

    # --- walker -----------------------------------------------------------
    def walk(self, starts=None, chain_len: int | None = None):
        """Returns (results, chain) like xe_walk_all: results are tuples
        (head, start, count, status, bad_port, other) per vcpu*16+prio."""
        mem = self.mem
        if chain_len is None:
            chain_len = mem.nr_ports
        owner = [0] * mem.nr_ports
        chain: list[int] = []
        results = []
        for v in range(mem.nr_vcpus):
            cb = mem.control_block(v)
            for p in range(Q):
                qid = v * Q + p
                if cb is None:
                    results.append((starts[qid] if starts else 0, len(chain), 0, Walk.NO_CONTROL, 0, -1))
                    continue
                head = starts[qid] if starts and starts[qid] else cb[2 + p]
                results.append(self._walk_queue(qid, head, chain, chain_len, owner))
        return results, chain

    def _walk_queue(self, qid, head, chain, chain_len, owner):
        start = len(chain)
        if head == 0:
            return (head, start, 0, Walk.EMPTY, 0, -1)
        w = self._word(head)
        if w is None:
            return (head, start, 0, Walk.RANGE, head, -1)
        if not w & abi.WORD_LINKED:
            return (head, start, 0, Walk.STALE, head, -1)
        port = head
        status, bad, other = Walk.END, 0, -1
        while True:
            if owner[port] == qid + 1:
                status, bad = Walk.CYCLE, port
                break
            if owner[port]:
                status, bad, other = Walk.SHARED, port, owner[port] - 1
                break
            if len(chain) >= chain_len:
                status, bad = Walk.TRUNCATED, port
                break
            owner[port] = qid + 1
            chain.append(port)
            port = w & LINK_MASK
            if port == 0:
                break
            w = self._word(port)
            if w is None:
                status, bad = Walk.RANGE, port
                break
            if not w & abi.WORD_LINKED:
                status, bad = Walk.UNLINKED, port
                break
        return (head, start, len(chain) - start, status, bad, other)
