"""DomainMemory: one domain image's reads and writes, at the offsets layout.py lays out.

layout.py says where everything is (the header words, the sections, ``xe_chan`` and the other structs, the
geometry); this module attaches to an image in any writable buffer, checks its header, and gives the engines,
the simulator and the dump readers each field by name, so none of them computes an offset itself.
"""

from __future__ import annotations

import struct

from .. import abi
from .layout import (
    ABI_2L,
    ABI_FIFO,
    ABI_WORD,
    CB_STATE_OFFSET,
    CHAN,
    CONSUMER_OFFSET,
    EVTCHNS_PER_BUCKET,
    FREES_WORD,
    GUEST_READY_BITS,
    GUEST_UPCALL_ONE,
    GUEST_VCPU,
    HEADER,
    HEADER_FIELDS,
    L2_MASK,
    L2_PENDING,
    L2_SCAN,
    L2_WORDS,
    LAYOUT_VERSION,
    LAYOUT_VERSIONS,
    MAGIC,
    TAILS_PER_VCPU,
    UPCALL_COUNT,
    UPCALL_OFFSET,
    VALID_WORD,
    VCPU_INFO,
    VCPU_STATE_OFFSET,
    VCPU_STATES,
    Chan,
    Geometry,
    LayoutError,
)
from .settle import SETTLE_TRIES, settle


class DomainMemory:
    """A view of one domain image inside ``buf`` (any writable buffer)."""

    def __init__(self, buf, offset: int = 0, origin: str = "domain image"):
        """Attach to the image at ``offset`` of ``buf``; ``origin`` names the buffer in errors."""
        self.origin = origin
        self.offset = offset
        self.warnings: list[str] = []  # impossible values a loader found and left in place; dumps show them
        # a copy's: whether its guest queues are of one moment (settled_snapshot); None: the buffer is live
        self.settled: bool | None = None
        view = memoryview(buf)
        try:
            self._attach(view, offset)
        except BaseException:
            # a traceback keeps this frame (and our views) alive: let go of the buffer now, so a file
            # mapping under it can still be closed
            for v in (getattr(self, "_words", None), getattr(self, "buffer", None), view):
                if v is not None:
                    v.release()
            raise

    def _attach(self, view: memoryview, offset: int) -> None:
        origin = self.origin
        if view.readonly:
            raise LayoutError(f"{origin}: buffer is read-only")
        if offset % 8:
            raise self._bad(0, "domain image", "not 8-byte aligned")
        if len(view) < offset + abi.PAGE_SIZE:
            raise self._bad(0, "domain image", f"truncated: {max(len(view) - offset, 0)} bytes")
        magic, version, nr_vcpus, max_pages, nr_pages, nr_chans, _ = HEADER.unpack_from(view, offset)
        if magic != MAGIC:
            raise self._bad(0, "magic", f"bad domain image magic {magic:#010x}")
        if version not in LAYOUT_VERSIONS:
            raise self._bad(4, "version", f"unsupported domain image version {version}")
        self.geometry = Geometry(nr_vcpus, max_pages, nr_chans, version)
        try:
            self.geometry.validate()
        except LayoutError as e:
            raise self._bad(HEADER_FIELDS[e.field or ""], e.field or "", str(e)) from None
        if nr_pages > max_pages:
            raise self._bad(16, "nr_pages", f"event array of {nr_pages} pages exceeds its {max_pages}-page capacity")
        if len(view) < offset + self.geometry.size:
            raise self._bad(0, "domain image", f"truncated: {len(view) - offset} of {self.geometry.size} bytes")
        self.buffer = view[offset : offset + self.geometry.size]
        self._words = self.buffer.cast("I")
        for v in range(nr_vcpus):
            self.cb_offset(v)  # a control-block offset out of its page is refused now, not when followed
            self.vcpu_state(v)
        if version >= 2:
            self.event_abi  # an unknown ABI is refused now  # noqa: B018
            if self.valid_ports > nr_chans:
                raise self._bad(4 * VALID_WORD, "valid_ports", f"{self.valid_ports} valid ports exceed the "
                                f"{nr_chans}-port channel table")

    def release(self) -> None:
        """Let go of the buffer (so an mmap under it can be closed); the object is unusable after."""
        for view in (self._words, self.buffer):
            view.release()

    def _bad(self, rel: int, field: str, why: str) -> LayoutError:
        """The error for a bad field ``rel`` bytes into this image."""
        at = self.offset + rel
        return LayoutError(f"{self.origin}: offset {at:#x}: field {field}: {why}", offset=at, field=field)

    @classmethod
    def create(cls, nr_vcpus: int = 1, max_pages: int = 1, nr_chans: int | None = None, buf=None, offset: int = 0):
        """Format a fresh image (no pages, no control blocks) and attach to it."""
        if nr_chans is None:
            nr_chans = max_pages * abi.EVENT_WORDS_PER_PAGE
        geo = Geometry(nr_vcpus, max_pages, nr_chans)
        geo.validate()
        if buf is None:
            buf = bytearray(geo.size)
        view = memoryview(buf)
        if len(view) < offset + geo.size:
            raise LayoutError(f"buffer too small for domain image: {len(view) - offset} < {geo.size} bytes")
        view[offset : offset + geo.size] = bytes(geo.size)
        HEADER.pack_into(view, offset, MAGIC, LAYOUT_VERSION, nr_vcpus, max_pages, 0, nr_chans, 0)
        struct.pack_into("<I", view, offset + 4 * VALID_WORD, min(EVTCHNS_PER_BUCKET, nr_chans))  # evtchn_init()
        mem = cls(buf, offset)
        for port in range(nr_chans):
            mem.set_chan(port, Chan())
        return mem

    # --- header -------------------------------------------------------
    def _hdr(self, index: int) -> int:
        return self._words[index]

    @property
    def nr_vcpus(self) -> int:
        return self.geometry.nr_vcpus

    @property
    def max_pages(self) -> int:
        return self.geometry.max_pages

    @property
    def nr_chans(self) -> int:
        return self.geometry.nr_chans

    @property
    def nr_pages(self) -> int:
        """Checked on every read: another process may have written the header since we attached."""
        n = self._words[4]
        if n > self.geometry.max_pages:
            raise self._bad(16, "nr_pages", f"event array of {n} pages exceeds its {self.geometry.max_pages}-page "
                            "capacity")
        return n

    @property
    def nr_ports(self) -> int:
        """Ports that have an event word now."""
        return self.nr_pages * abi.EVENT_WORDS_PER_PAGE

    @property
    def generation(self) -> int:
        """Bumped whenever pages or control blocks are added (engines re-read then)."""
        return self._words[6]

    def _bump(self) -> None:
        self._words[6] = (self._words[6] + 1) & 0xFFFFFFFF

    @property
    def frees(self) -> int:
        """How many channels were ever freed: unchanged means no port below a cached hint became free."""
        return self._words[FREES_WORD]

    def bump_frees(self) -> None:
        """Record that a channel was freed (callers hold the hypervisor lock)."""
        self._words[FREES_WORD] = (self._words[FREES_WORD] + 1) & 0xFFFFFFFF

    @property
    def event_abi(self) -> int:
        """ABI_2L or ABI_FIFO (version 1 images: FIFO)."""
        if self.geometry.version < 2:
            return ABI_FIFO
        value = self._words[ABI_WORD]
        if value not in (ABI_2L, ABI_FIFO):
            raise self._bad(4 * ABI_WORD, "abi", f"unknown event-channel ABI {value}")
        return value

    def set_event_abi(self, value: int) -> None:
        if self.geometry.version < 2:
            raise LayoutError(f"{self.origin}: a version 1 image has no 2-level section")
        self._words[ABI_WORD] = value
        self._bump()

    @property
    def valid_ports(self) -> int:
        """Xen's valid_evtchns: ports below it have a channel structure (port_is_valid); version 1: all."""
        if self.geometry.version < 2:
            return self.nr_chans
        return self._words[VALID_WORD]

    def grow_valid(self, port: int) -> None:
        """evtchn_allocate_port(): buckets of EVTCHNS_PER_BUCKET until ``port`` is covered (never shrinks)."""
        if self.geometry.version < 2:
            return
        valid = self._words[VALID_WORD]
        while valid <= port:
            valid += EVTCHNS_PER_BUCKET
        self._words[VALID_WORD] = min(valid, self.nr_chans)

    def chan_states(self, start: int, stop: int) -> bytes:
        """The ``state`` byte of channels ``start..stop-1``, one byte each (a strided copy, done in C)."""
        base = self.geometry.chans_offset
        return self.buffer[base + start * CHAN.size: base + stop * CHAN.size: CHAN.size].tobytes()

    # --- event array --------------------------------------------------
    def page_words(self, index: int) -> memoryview:
        start = (self.geometry.pages_offset + index * abi.PAGE_SIZE) // 4
        return self._words[start : start + abi.EVENT_WORDS_PER_PAGE]

    def add_page(self, fill: int = abi.WORD_MASKED) -> int:
        """Append one page, pre-filled as Linux does (every word MASKED)."""
        index = self.nr_pages
        if index >= self.max_pages:
            raise LayoutError(f"event array is full: {index} of {self.max_pages} pages")
        words = self.page_words(index)
        for i in range(abi.EVENT_WORDS_PER_PAGE):
            words[i] = fill
        self._words[4] = index + 1
        self._bump()
        return index

    def word(self, port: int) -> int | None:
        if not 0 <= port < self.nr_ports:
            return None
        return self._words[self.geometry.pages_offset // 4 + port]

    def event_words(self) -> list[int]:
        """Every event word now, indexed by port (one copy: a bulk read's)."""
        start = self.geometry.pages_offset // 4
        with self._words[start: start + self.nr_ports] as view:
            return view.tolist()

    def set_word(self, port: int, value: int) -> None:
        if not 0 <= port < self.nr_ports:
            raise LayoutError(f"port {port} has no event word (array has {self.nr_ports} ports)")
        self._words[self.geometry.pages_offset // 4 + port] = value & 0xFFFFFFFF

    # --- control blocks -----------------------------------------------
    def cb_offset(self, vcpu: int) -> int | None:
        """Where vCPU ``vcpu``'s control block sits in its page, or None; a bad offset is an error, never followed."""
        if not 0 <= vcpu < self.nr_vcpus:
            raise LayoutError(f"{self.origin}: vCPU {vcpu} out of range 0..{self.nr_vcpus - 1}")
        state = self._words[CB_STATE_OFFSET // 4 + vcpu]
        if state == 0:
            return None
        off = state - 1
        if off % 8 or off > abi.PAGE_SIZE - abi.CONTROL_BLOCK_SIZE:
            raise self._bad(CB_STATE_OFFSET + 4 * vcpu, f"control_block[{vcpu}]",
                            f"control block offset {off:#x} is not 8-byte aligned inside its page")
        return off

    def register_control_block(self, vcpu: int, offset: int = 0) -> None:
        """EVTCHNOP_init_control's placement rules: 8-byte aligned, inside the page."""
        if not 0 <= vcpu < self.nr_vcpus:
            raise LayoutError(f"vCPU {vcpu} out of range 0..{self.nr_vcpus - 1}")
        if offset % 8 or not 0 <= offset <= abi.PAGE_SIZE - abi.CONTROL_BLOCK_SIZE:
            raise LayoutError(f"control block offset {offset} is not 8-byte aligned inside a page")
        self._words[CB_STATE_OFFSET // 4 + vcpu] = offset + 1
        self._bump()

    def cb_byte_offset(self, vcpu: int) -> int | None:
        off = self.cb_offset(vcpu)
        if off is None:
            return None
        return self.geometry.cb_pages_offset + vcpu * abi.PAGE_SIZE + off

    def control_block(self, vcpu: int) -> memoryview | None:
        """The 18 words ``ready, _rsvd, head[16]`` of vCPU ``vcpu``, or None."""
        off = self.cb_byte_offset(vcpu)
        if off is None:
            return None
        return self._words[off // 4 : off // 4 + 18]

    def fifo_teardown(self) -> None:
        """Xen's evtchn_fifo_destroy() and the guest forgetting its queues: no control block, no array page,
        no tails or local heads; the domain is on 2-level (its bitmaps are left as they are)."""
        for v in range(self.nr_vcpus):
            self._words[CB_STATE_OFFSET // 4 + v] = 0
            g = self.guest(v)
            for i in range(len(g)):
                g[i] = 0
        tails = self.tails()
        for i in range(len(tails)):
            tails[i] = 0
        self._words[4] = 0
        self.set_event_abi(ABI_2L)

    def upcall_byte_offset(self, vcpu: int) -> int:
        """Offset (in the image) of vCPU ``vcpu``'s upcall counter, for futex waits."""
        return UPCALL_OFFSET + 4 * vcpu

    def upcall_seq(self, vcpu: int) -> int:
        """The count of upcalls (bits 0..30; bit 31 says a consumer sleeps on the word: the simulator's kick wakes
        it, csrc/simhost.c)."""
        return self._words[UPCALL_OFFSET // 4 + vcpu] & UPCALL_COUNT

    def bump_upcall(self, vcpu: int) -> None:
        """Mark an upcall pending for ``vcpu`` (callers hold the hypervisor lock; no sleeper is woken: the
        simulator kicks through xe_upcall_bump)."""
        i = UPCALL_OFFSET // 4 + vcpu
        self._words[i] = (self._words[i] + 1) & UPCALL_COUNT

    def vcpu_state(self, vcpu: int) -> int:
        """VCPU_ONLINE, VCPU_DOWN or VCPU_NEVER_UP (layout.py); an unknown value is an error, never guessed at."""
        if not 0 <= vcpu < self.nr_vcpus:
            raise LayoutError(f"{self.origin}: vCPU {vcpu} out of range 0..{self.nr_vcpus - 1}")
        value = self.buffer[VCPU_STATE_OFFSET + vcpu]
        if value not in VCPU_STATES:
            raise self._bad(VCPU_STATE_OFFSET + vcpu, f"vcpu_state[{vcpu}]", f"unknown vCPU state {value}")
        return value

    def vcpu_states(self) -> list[int]:
        """Every vCPU's state (vcpu_state), in vCPU order."""
        return [self.vcpu_state(v) for v in range(self.nr_vcpus)]

    def set_vcpu_state(self, vcpu: int, state: int) -> None:
        """One byte store: a kill leaves the old state or the new."""
        if state not in VCPU_STATES:
            raise LayoutError(f"unknown vCPU state {state}")
        self.vcpu_state(vcpu)
        self.buffer[VCPU_STATE_OFFSET + vcpu] = state

    def consumer(self, vcpu: int) -> int:
        return self._words[CONSUMER_OFFSET // 4 + vcpu]

    def set_consumer(self, vcpu: int, pid: int) -> None:
        self._words[CONSUMER_OFFSET // 4 + vcpu] = pid

    # --- hypervisor-private -------------------------------------------
    def tails(self) -> memoryview:
        start = self.geometry.tails_offset // 4
        return self._words[start : start + self.nr_vcpus * TAILS_PER_VCPU]

    def chan(self, port: int) -> Chan:
        return Chan(*CHAN.unpack_from(self.buffer, self.geometry.chans_offset + port * CHAN.size))

    def set_chan(self, port: int, chan: Chan) -> None:
        CHAN.pack_into(
            self.buffer,
            self.geometry.chans_offset + port * CHAN.size,
            chan.state,
            chan.priority,
            chan.last_priority,
            chan.flags,
            chan.notify_vcpu,
            chan.last_vcpu,
            chan.remote_dom,
            chan.aux,
            chan.remote_port,
        )

    def update_chan(self, port: int, **fields) -> None:
        chan = self.chan(port)
        for name, value in fields.items():
            setattr(chan, name, value)
        self.set_chan(port, chan)

    # --- guest-private ------------------------------------------------
    def guest(self, vcpu: int) -> memoryview:
        """``ready, head[16]``: Linux's local state for vCPU ``vcpu`` (ready's upcall count included: the
        READY bits are ``guest_ready``'s)."""
        start = (self.geometry.guest_offset + vcpu * GUEST_VCPU.size) // 4
        return self._words[start : start + 17]

    def guest_ready(self, vcpu: int) -> int:
        """The READY bits Linux holds for vCPU ``vcpu`` (its local copy, without the upcall count)."""
        return self._words[(self.geometry.guest_offset + vcpu * GUEST_VCPU.size) // 4] & GUEST_READY_BITS

    def guest_at(self, vcpu: int) -> int:
        """Where vCPU ``vcpu``'s guest state starts in the buffer (its ready word: the upcall count's seqcount)."""
        return self.offset + self.geometry.guest_offset + vcpu * GUEST_VCPU.size

    # --- 2-level (version 2) ------------------------------------------
    def _l2(self) -> int:
        if self.geometry.version < 2:
            raise LayoutError(f"{self.origin}: a version 1 image has no 2-level section")
        return self.geometry.l2_offset

    def l2_pending(self) -> memoryview:
        """shared_info.evtchn_pending as 64 u64 words (bit ``port % 64`` of word ``port // 64``)."""
        at = self._l2() + L2_PENDING
        return self.buffer[at: at + 8 * L2_WORDS].cast("Q")

    def l2_mask(self) -> memoryview:
        at = self._l2() + L2_MASK
        return self.buffer[at: at + 8 * L2_WORDS].cast("Q")

    def l2_bit(self, which: str, port: int) -> bool:
        """Bit ``port`` of the ``pending`` or ``mask`` bitmap; ports past 2-level's range read clear."""
        if not 0 <= port < abi.EVTCHN_2L_NR_CHANNELS:
            return False
        words = self.l2_pending() if which == "pending" else self.l2_mask()
        return bool(words[port // 64] >> (port % 64) & 1)

    def l2_word(self, port: int) -> int | None:
        """A 2-level port's pending and mask bits in a FIFO word's PENDING and MASKED places (None past 2-level's
        range), so its status flags read as a FIFO port's do, from any source."""
        if not 0 <= port < abi.EVTCHN_2L_NR_CHANNELS:
            return None
        return (abi.WORD_PENDING if self.l2_bit("pending", port) else 0) | \
            (abi.WORD_MASKED if self.l2_bit("mask", port) else 0)

    def vcpu_info(self, vcpu: int) -> tuple[int, int, int]:
        """``(evtchn_upcall_pending, evtchn_upcall_mask, evtchn_pending_sel)`` of vCPU ``vcpu``."""
        self._l2()
        if not 0 <= vcpu < self.nr_vcpus:
            raise LayoutError(f"{self.origin}: vCPU {vcpu} out of range 0..{self.nr_vcpus - 1}")
        return VCPU_INFO.unpack_from(self.buffer, self.geometry.vcpu_info_offset(vcpu))

    def l2_scan(self, vcpu: int) -> memoryview:
        """``current_word_idx, current_bit_idx``: where Linux's 2-level upcall on this vCPU resumes."""
        self._l2()
        at = self.geometry.l2_scan_offset + vcpu * L2_SCAN.size
        return self.buffer[at: at + L2_SCAN.size].cast("I")

    def snapshot(self) -> bytes:
        return bytes(self.buffer)

    def begin_upcall(self, vcpu: int) -> int:
        """vCPU ``vcpu``'s upcall count made odd before an upcall's first write (kept odd if a killed upcall left
        it so); the even value ``end_upcall`` stores after its last (xe_upcall_begin's rule)."""
        at = (self.geometry.guest_offset + vcpu * GUEST_VCPU.size) // 4
        words = self._words
        count = words[at] & ~GUEST_READY_BITS
        if not count & GUEST_UPCALL_ONE:
            count = count + GUEST_UPCALL_ONE & 0xFFFFFFFF
            words[at] = words[at] & GUEST_READY_BITS | count
        return count + GUEST_UPCALL_ONE & 0xFFFFFFFF

    def end_upcall(self, vcpu: int, end: int | None = None) -> bool:
        """vCPU ``vcpu``'s upcall count set to ``end`` (``begin_upcall``'s); without it, made even if an upcall
        was left under way (a killed consumer's vCPU mended); whether one was."""
        at = (self.geometry.guest_offset + vcpu * GUEST_VCPU.size) // 4
        words = self._words
        if end is None:
            if not words[at] & GUEST_UPCALL_ONE:
                return False
            end = words[at] + GUEST_UPCALL_ONE & ~GUEST_READY_BITS & 0xFFFFFFFF
        words[at] = words[at] & GUEST_READY_BITS | end
        return True

    def upcall_counts(self) -> list[int]:
        """Each vCPU's upcall count as the buffer holds it now: odd while that vCPU's upcall handler runs."""
        at = self.geometry.guest_offset // 4
        step = GUEST_VCPU.size // 4
        return [self._words[at + v * step] // GUEST_UPCALL_ONE for v in range(self.nr_vcpus)]

    def settled_snapshot(self, tries: int = SETTLE_TRIES) -> tuple[bytes, bool]:
        """A copy, and whether the guest's queues in it are of one moment (settle.py: made again while an upcall
        ran).  A buffer that is already a copy says what its copier found (``settled``)."""
        if self.settled is not None:
            return bytes(self.buffer), self.settled
        return settle(self.upcall_counts, lambda: bytes(self.buffer), tries)
