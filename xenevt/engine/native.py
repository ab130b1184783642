"""The C engine (xenevt._native) bound to a DomainMemory.

Builds the ``xe_domain`` descriptor once and re-reads the layout only when
its generation changes (a page or control block was added, maybe by another
process), so each operation is one C call.  The layout's reads check each
count and offset they take from the shared header, and ``xe_domain_check``
then holds every pointer of the descriptor to the image's bounds, so the C
engine is never handed a pointer outside the buffer.
"""

from __future__ import annotations

from .. import abi
from .._native import ffi, lib
from .domainmem import DomainMemory
from .layout import CB_STATE_OFFSET, HEADER_FIELDS, LayoutError

Q = abi.EVTCHN_FIFO_MAX_QUEUES


class NativeEngine:
    name = "c"

    def __init__(self, mem: DomainMemory):
        self.mem = mem
        self._base = ffi.from_buffer("char[]", mem.buffer, require_writable=True)
        self._d = ffi.new("xe_domain *")
        self._cbs = ffi.new("xe_control_block *[]", mem.nr_vcpus)
        geo = mem.geometry
        self._d.cb = self._cbs
        self._d.nr_vcpus = mem.nr_vcpus
        self._d.nr_chans = mem.nr_chans
        self._d.tails = ffi.cast("uint32_t *", self._base + geo.tails_offset)
        self._d.chans = ffi.cast("xe_chan *", self._base + geo.chans_offset)
        self._guests = ffi.cast("xe_guest_vcpu *", self._base + geo.guest_offset)
        self._size = len(mem.buffer)
        self._where = ffi.new("uint32_t *")
        self._err = ffi.new("xe_error *")
        self._value = ffi.new("uint32_t *")
        self._out = ffi.new("uint32_t[]", 4096)
        self._gen: int | None = None  # the layout generation read last (refresh)
        self.refresh()

    def refresh(self) -> None:
        """Re-read pages and control blocks from the layout's header (checked there, then again in C)."""
        mem, geo, d = self.mem, self.mem.geometry, self._d
        self._gen = mem.generation
        nr_pages = mem.nr_pages
        cbs = [mem.cb_byte_offset(v) for v in range(mem.nr_vcpus)]
        for i in range(abi.MAX_EVENT_ARRAY_PAGES):
            if i < nr_pages:
                d.pages[i] = ffi.cast("uint32_t *", self._base + geo.pages_offset + i * abi.PAGE_SIZE)
            else:
                d.pages[i] = ffi.NULL
        d.nr_pages = nr_pages
        for v, off in enumerate(cbs):
            self._cbs[v] = ffi.NULL if off is None else ffi.cast("xe_control_block *", self._base + off)
        rc = lib.xe_domain_check(d, self._base, self._size, self._where)
        if rc < 0:  # the layout's own checks should have caught it: refuse rather than follow
            d.nr_pages = 0
            for v in range(mem.nr_vcpus):
                self._cbs[v] = ffi.NULL
            self._gen = None
            where = self._where[0]
            rel, field = {lib.XE_E_RANGE: (HEADER_FIELDS["nr_pages"], f"page {where}"),
                          lib.XE_E_NO_CONTROL: (CB_STATE_OFFSET + 4 * where, f"control_block[{where}]")}.get(
                              rc, (0, "domain image"))
            raise LayoutError(f"{mem.origin}: offset {mem.offset + rel:#x}: field {field}: the C engine refused "
                              f"the descriptor built from it (code {rc})", offset=mem.offset + rel, field=field)

    def close(self) -> None:
        """Let go of the buffer (so an mmap under it can be closed); the engine is unusable after."""
        self._d.nr_pages = 0
        ffi.release(self._base)

    def _fresh(self):
        if self.mem.generation != self._gen:
            self.refresh()
        return self._d

    # --- words --------------------------------------------------------
    def word(self, port: int) -> int | None:
        if not 0 <= port <= 0xFFFFFFFF:
            return None
        if lib.xe_word_get(self._fresh(), port, self._value) < 0:
            return None
        return self._value[0]

    # --- hypervisor side ------------------------------------------------
    def set_pending(self, port: int) -> int:
        return lib.xe_hv_set_pending(self._fresh(), port)

    def unmask(self, port: int) -> int:
        return lib.xe_hv_unmask(self._fresh(), port)

    def clear_pending(self, port: int) -> int:
        return lib.xe_hv_clear_pending(self._fresh(), port)

    def page_added(self, index: int) -> int:
        return lib.xe_hv_page_added(self._fresh(), index)

    # --- guest side -----------------------------------------------------
    def consume(self, vcpu: int, flags: int, max_events: int, max_steps: int = 1 << 30):
        """Returns (ports, (code, port, vcpu, priority)) like xe_guest_consume."""
        d = self._fresh()
        if not 0 <= vcpu < d.nr_vcpus:
            return [], (-2, 0, vcpu, 0)
        if max_events > len(self._out):
            self._out = ffi.new("uint32_t[]", max_events)
        n = lib.xe_guest_consume(d, vcpu, self._guests + vcpu, flags, self._out, max_events, max_steps, self._err)
        e = self._err
        return ffi.unpack(self._out, n), (e.code, e.port, e.vcpu, e.priority)

    def guest_mask(self, port: int) -> int:
        return lib.xe_guest_mask(self._fresh(), port)

    def guest_unmask(self, port: int) -> int:
        return lib.xe_guest_unmask(self._fresh(), port)

    def guest_clear_pending(self, port: int) -> int:
        return lib.xe_guest_clear_pending(self._fresh(), port)

    # --- walker -----------------------------------------------------------
    def walk(self, starts=None, chain_len: int | None = None):
        """Returns (results, chain) like xe_walk_all."""
        d = self._fresh()
        nr_ports = d.nr_pages * abi.EVENT_WORDS_PER_PAGE
        if chain_len is None:
            chain_len = nr_ports
        nq = d.nr_vcpus * Q
        chain = ffi.new("uint32_t[]", max(chain_len, 1))
        owner = ffi.new("uint16_t[]", max(nr_ports, 1))
        results = ffi.new("xe_walk_result[]", nq)
        c_starts = ffi.new("uint32_t[]", list(starts)) if starts else ffi.NULL
        used = lib.xe_walk_all(d, c_starts, chain, chain_len, owner, results)
        if used < 0:
            raise ValueError(f"walker refused the domain layout (code {used})")
        out = [(r.head, r.start, r.count, r.status, r.bad_port, r.other) for r in results]
        return out, ffi.unpack(chain, used)
