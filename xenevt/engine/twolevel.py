"""Pure-Python reference of the 2-level ABI engine (csrc/twolevel.c): same operations, same results.

The obviously-right reading of xen/common/event_2l.c (Xen's side) and Linux's
drivers/xen/events/events_2l.c (the guest's upcall scan and mask/unmask) on a
DomainMemory's 2-level section: shared_info's ``evtchn_pending``/``evtchn_mask``
bitmaps (bit ``port % 64`` of word ``port // 64``), each vCPU's ``vcpu_info``
(``evtchn_upcall_pending``, ``evtchn_pending_sel``) and Linux's saved scan
position.  Plain read-modify-write: the reference is only driven by one thread.

Results are raw numbers, as the C engine's (codes.py): the hypervisor side
returns SP bits, the guest side 0/1 (and SP.UPCALL), errors are negative Err.
"""

from __future__ import annotations

import struct

from .. import abi
from . import faults
from .codes import SP, Consume, Err
from .domainmem import DomainMemory

WORDS = 64  # xen_ulong_t words per bitmap, and bits per word (64-bit guest)
NR_PORTS = abi.EVTCHN_2L_NR_CHANNELS
ALL = (1 << WORDS) - 1
OWN_VCPU = 0xFFFFFFFF  # guest_unmask: the port's own vCPU (XE_L2_OWN_VCPU)
_SEL = struct.Struct("<Q")
SEL_OFFSET = 8  # vcpu_info.evtchn_pending_sel (evtchn_upcall_pending is byte 0)


def _lowest(x: int) -> int:
    return (x & -x).bit_length() - 1


class TwoLevelReference:
    name = "python"

    def __init__(self, mem: DomainMemory):
        mem.l2_pending()  # a version 1 image has no 2-level section: refused here, not at first use
        self.mem = mem

    def refresh(self) -> None:
        """Nothing cached: every call reads the layout afresh."""

    def close(self) -> None:
        """Nothing held beyond the DomainMemory."""

    # --- memory ---------------------------------------------------------
    def _nr_ports(self) -> int:
        return min(self.mem.nr_chans, NR_PORTS)

    def _vcpu_at(self, vcpu: int) -> int | None:
        """Byte offset of vCPU ``vcpu``'s vcpu_info in the image, or None for a vCPU the domain lacks."""
        if not 0 <= vcpu < self.mem.nr_vcpus:
            return None
        return self.mem.geometry.vcpu_info_offset(vcpu)

    def _sel(self, at: int) -> int:
        return _SEL.unpack_from(self.mem.buffer, at + SEL_OFFSET)[0]

    def _set_sel(self, at: int, value: int) -> None:
        _SEL.pack_into(self.mem.buffer, at + SEL_OFFSET, value)

    def _test_and_set_sel(self, at: int, word: int) -> bool:
        sel = self._sel(at)
        self._set_sel(at, sel | 1 << word)
        return bool(sel >> word & 1)

    def _mark_events_pending(self, at: int) -> int:
        """Xen's vcpu_mark_events_pending(): test-and-set bit 0 of evtchn_upcall_pending; UPCALL if newly set."""
        old = self.mem.buffer[at]
        self.mem.buffer[at] = old | 1
        return 0 if old & 1 else SP.UPCALL

    @staticmethod
    def _test_and_set(words, port: int) -> bool:
        w, bit = divmod(port, WORDS)
        old = words[w]
        words[w] = old | 1 << bit
        return bool(old >> bit & 1)

    @staticmethod
    def _test_and_clear(words, port: int) -> bool:
        w, bit = divmod(port, WORDS)
        old = words[w]
        words[w] = old & ~(1 << bit) & ALL
        return bool(old >> bit & 1)

    @staticmethod
    def _test(words, port: int) -> bool:
        return bool(words[port // WORDS] >> (port % WORDS) & 1)

    # --- hypervisor side (event_2l.c) -----------------------------------
    def set_pending(self, port: int) -> int:
        """evtchn_2l_set_pending(): WAS_PENDING (nothing more done), MASKED (pending bit only), UPCALL (selector
        bit and upcall newly set: kick the vCPU) or 0 (coalesced: selector bit or upcall already set)."""
        if not 0 <= port < self._nr_ports():
            return Err.PORT
        at = self._vcpu_at(self.mem.chan(port).notify_vcpu)
        if at is None:
            return Err.VCPU
        if self._test_and_set(self.mem.l2_pending(), port):
            return SP.WAS_PENDING
        if self._test(self.mem.l2_mask(), port):
            return SP.MASKED
        if self._test_and_set_sel(at, port // WORDS):
            return 0
        return int(self._mark_events_pending(at))

    def unmask(self, port: int) -> int:
        """evtchn_2l_unmask() (EVTCHNOP_unmask): 0 if the port was not masked (Xen does nothing), NOT_PENDING if it
        was masked but not pending, else WAS_PENDING, plus UPCALL when the re-raise newly marked the upcall."""
        if not 0 <= port < self._nr_ports():
            return Err.PORT
        at = self._vcpu_at(self.mem.chan(port).notify_vcpu)
        if at is None:
            return Err.VCPU
        if not self._test_and_clear(self.mem.l2_mask(), port):
            return 0
        if not self._test(self.mem.l2_pending(), port):
            return SP.NOT_PENDING
        if self._test_and_set_sel(at, port // WORDS):
            return SP.WAS_PENDING
        return int(SP.WAS_PENDING | self._mark_events_pending(at))

    def clear_pending(self, port: int) -> int:
        if not 0 <= port < self._nr_ports():
            return Err.PORT
        self._test_and_clear(self.mem.l2_pending(), port)
        return Err.OK

    def is_pending(self, port: int) -> int:
        if not 0 <= port < self._nr_ports():
            return Err.PORT
        return int(self._test(self.mem.l2_pending(), port))

    def is_masked(self, port: int) -> int:
        if not 0 <= port < self._nr_ports():
            return Err.PORT
        return int(self._test(self.mem.l2_mask(), port))

    # --- guest side (Linux events_2l.c) ---------------------------------
    def _active(self, vcpu: int, word: int) -> int:
        """Linux's active_evtchns(): pending, not masked, bound to this CPU (cpu_evtchn_mask: here the ports
        whose notify_vcpu is this vCPU; ports past the channel table are bound to none)."""
        mem = self.mem
        cand = mem.l2_pending()[word] & ~mem.l2_mask()[word] & ALL
        act = 0
        for bit in range(WORDS):
            port = word * WORDS + bit
            if cand >> bit & 1 and port < mem.nr_chans and mem.chan(port).notify_vcpu == vcpu \
                    and not (faults.on(faults.L2_CPU_MASK_UNSET) and faults.point(faults.POINT_L2_CPU_MASK, port)):
                act |= 1 << bit
        return act

    def consume(self, vcpu: int, flags: int, max_events: int, max_steps: int = 1 << 30):
        """Linux's upcall on ``vcpu`` (``_upcall``), the vCPU's upcall count moved around it where something is
        pending (xe_l2_consume)."""
        at = self._vcpu_at(vcpu)
        if at is None or not (self.mem.buffer[at] or self._sel(at)):
            return self._upcall(vcpu, flags, max_events, max_steps)
        end = self.mem.begin_upcall(vcpu)
        try:
            return self._upcall(vcpu, flags, max_events, max_steps)
        finally:
            self.mem.end_upcall(vcpu, end)

    def _upcall(self, vcpu: int, flags: int, max_events: int, max_steps: int = 1 << 30):
        """Linux's upcall on ``vcpu``: returns (ports, (code, port, vcpu, priority)) like xe_l2_consume.

        Each pass clears evtchn_upcall_pending, takes the selector (xchg with 0), and scans the words it
        names round-robin from the saved word (that word first from the saved bit, and once more whole at
        the end), saving the position just past each port delivered; passes repeat while the upcall is
        pending again.  A batch stops before the port past ``max_events`` or the step past ``max_steps``
        (a step: a word visited, a port delivered, a pass after the first; not the wrap to word 0); the
        unfinished words' selector bits go back and evtchn_upcall_pending is set again, so the next call
        loses nothing.  Any ``max_steps`` >= 3 makes progress.
        """
        mem = self.mem
        out: list[int] = []
        at = self._vcpu_at(vcpu)
        if at is None:
            return out, (Err.VCPU, 0, vcpu, 0)
        scan = mem.l2_scan(vcpu)
        pending, mask = mem.l2_pending(), mem.l2_mask()
        steps = 0
        while True:
            start_word, start_bit = scan[0], scan[1]
            if start_word >= WORDS or start_bit >= WORDS:  # corrupt guest memory: reset, never follow
                scan[0] = scan[1] = 0
                return out, (Err.SCAN, 0, vcpu, 0)
            mem.buffer[at] = 0
            words_left = self._sel(at)
            self._set_sel(at, 0)
            word, i = start_word, 0
            while words_left:
                words = words_left & (ALL << word) & ALL
                if not words:  # nothing at or past ``word``: wrap (no step: a visit follows)
                    word = 0
                    i += 1
                    continue
                if steps >= max_steps:
                    return self._stop(at, words_left, out)
                steps += 1
                word = _lowest(words)
                bits = self._active(vcpu, word)
                bit = start_bit if word == start_word and i == 0 else 0
                while rest := bits & (ALL << bit) & ALL:
                    if len(out) >= max_events or steps >= max_steps:
                        return self._stop(at, words_left, out)
                    steps += 1
                    bit = _lowest(rest)
                    port = word * WORDS + bit
                    if flags & Consume.MASK:
                        self._test_and_set(mask, port)
                    if flags & Consume.ACK:
                        self._test_and_clear(pending, port)
                    out.append(port)
                    bit = (bit + 1) % WORDS
                    scan[0] = word if bit else (word + 1) % WORDS
                    scan[1] = bit
                    if bit == 0:
                        break
                if word != start_word or i != 0:  # the start word is visited twice, any other once
                    words_left &= ~(1 << word)
                word = (word + 1) % WORDS
                i += 1
            if len(out) >= max_events or steps >= max_steps or not mem.buffer[at]:
                return out, (Err.OK, 0, 0, 0)
            steps += 1

    def _stop(self, at: int, words_left: int, out: list[int]):
        """The batch limit: the unfinished words go back into the selector, the upcall is pending again."""
        self._set_sel(at, self._sel(at) | words_left)
        self.mem.buffer[at] = 1
        return out, (Err.OK, 0, 0, 0)

    def guest_mask(self, port: int) -> int:
        """evtchn_2l_test_and_set_mask(): the old mask bit."""
        if not 0 <= port < self._nr_ports():
            return Err.PORT
        return int(self._test_and_set(self.mem.l2_mask(), port))

    def guest_unmask(self, port: int, vcpu: int | None = None, hvm: bool = False) -> int:
        """Linux's evtchn_2l_unmask() run on ``vcpu`` (None: the port's own, its notify_vcpu).

        0: Linux makes the EVTCHNOP_unmask hypercall instead (the caller then does unmask()): the port is
        another vCPU's (mask left set) or an HVM guest found it pending (mask set again).  1: mask cleared
        here; 1 | SP.UPCALL when it was pending with its selector bit clear, so Linux set the selector bit and
        evtchn_upcall_pending itself.
        """
        if not 0 <= port < self._nr_ports():
            return Err.PORT
        own = self.mem.chan(port).notify_vcpu
        if vcpu is None or vcpu == OWN_VCPU:
            vcpu = own
        at = self._vcpu_at(vcpu)
        if at is None:
            return Err.VCPU
        if vcpu != own and not faults.on(faults.L2_UNMASK_HERE):  # (before 3e61615263: resent here, any port's)
            return 0
        mask = self.mem.l2_mask()
        self._test_and_clear(mask, port)
        if not self._test(self.mem.l2_pending(), port):
            return 1
        if hvm:
            self._test_and_set(mask, port)
            return 0
        if self._test_and_set_sel(at, port // WORDS):
            return 1
        self.mem.buffer[at] = 1
        return int(1 | SP.UPCALL)

    def guest_clear_pending(self, port: int) -> int:
        if not 0 <= port < self._nr_ports():
            return Err.PORT
        self._test_and_clear(self.mem.l2_pending(), port)
        return Err.OK
