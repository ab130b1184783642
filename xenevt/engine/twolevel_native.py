"""The C 2-level engine (csrc/twolevel.c in xenevt._native) bound to a DomainMemory.

The 2-level section's place follows from the geometry alone (it never moves
once the image exists), so the ``xe_l2_domain`` descriptor is built once and
held to the image's bounds by ``xe_l2_check`` before any call uses it.
"""

from __future__ import annotations

from .._native import ffi, lib
from .codes import Err
from .domainmem import DomainMemory
from .layout import L2_MASK, L2_PENDING, L2_SHARED_VCPUS, LayoutError


class NativeTwoLevel:
    """Same methods and results as TwoLevelReference (engine/twolevel.py)."""

    name = "c"

    def __init__(self, mem: DomainMemory):
        mem.l2_pending()  # a version 1 image has no 2-level section: refused here
        self.mem = mem
        geo = mem.geometry
        self._base = ffi.from_buffer("char[]", mem.buffer, require_writable=True)
        d = self._d = ffi.new("xe_l2_domain *")
        d.pending = ffi.cast("uint64_t *", self._base + geo.l2_offset + L2_PENDING)
        d.mask = ffi.cast("uint64_t *", self._base + geo.l2_offset + L2_MASK)
        d.vcpu_info = ffi.cast("xe_vcpu_info *", self._base + geo.vcpu_info_offset(0))
        d.vcpu_info_extra = (ffi.cast("xe_vcpu_info *", self._base + geo.vcpu_info_offset(L2_SHARED_VCPUS))
                             if mem.nr_vcpus > L2_SHARED_VCPUS else ffi.NULL)
        d.scan = ffi.cast("xe_l2_scan *", self._base + geo.l2_scan_offset)
        d.chans = ffi.cast("xe_chan *", self._base + geo.chans_offset)
        d.nr_vcpus = mem.nr_vcpus
        d.nr_chans = mem.nr_chans
        d.guests = ffi.cast("xe_guest_vcpu *", self._base + geo.guest_offset)  # (the upcall counts)
        self._err = ffi.new("xe_error *")
        self._out = ffi.new("uint32_t[]", 4096)
        where = ffi.new("uint32_t *")
        rc = lib.xe_l2_check(d, self._base, len(mem.buffer), where)
        if rc < 0:  # the geometry put the section outside its own image: refuse rather than follow
            ffi.release(self._base)
            raise LayoutError(f"{mem.origin}: the C 2-level engine refused the descriptor built from the "
                              f"image's geometry (code {rc}, field {where[0]})", field="l2")

    def refresh(self) -> None:
        """Nothing to re-read: the 2-level section's place depends on the geometry only."""

    def close(self) -> None:
        """Let go of the buffer (so an mmap under it can be closed); the engine is unusable after."""
        self._d.nr_chans = 0  # every port is then refused, never followed into a released buffer
        self._d.nr_vcpus = 0
        ffi.release(self._base)

    @staticmethod
    def _port(port: int) -> int:
        """A port for C: anything not a u32 is out of range (what C would have said of it)."""
        return port if 0 <= port <= 0xFFFFFFFF else 0xFFFFFFFF

    # --- hypervisor side --------------------------------------------------
    def set_pending(self, port: int) -> int:
        return lib.xe_l2_set_pending(self._d, self._port(port))

    def unmask(self, port: int) -> int:
        return lib.xe_l2_unmask(self._d, self._port(port))

    def clear_pending(self, port: int) -> int:
        return lib.xe_l2_clear_pending(self._d, self._port(port))

    def is_pending(self, port: int) -> int:
        return lib.xe_l2_is_pending(self._d, self._port(port))

    def is_masked(self, port: int) -> int:
        return lib.xe_l2_is_masked(self._d, self._port(port))

    # --- guest side -------------------------------------------------------
    def consume(self, vcpu: int, flags: int, max_events: int, max_steps: int = 1 << 30):
        """Returns (ports, (code, port, vcpu, priority)) like xe_l2_consume."""
        if not 0 <= vcpu < self._d.nr_vcpus:
            return [], (Err.VCPU, 0, vcpu, 0)
        max_events = max(0, min(max_events, 0xFFFFFFFF))
        if max_events > len(self._out):
            self._out = ffi.new("uint32_t[]", max_events)
        n = lib.xe_l2_consume(self._d, vcpu, flags, self._out, max_events, max(0, min(max_steps, 0xFFFFFFFF)),
                              self._err)
        e = self._err
        return ffi.unpack(self._out, n), (e.code, e.port, e.vcpu, e.priority)

    def guest_mask(self, port: int) -> int:
        return lib.xe_l2_guest_mask(self._d, self._port(port))

    def guest_unmask(self, port: int, vcpu: int | None = None, hvm: bool = False) -> int:
        if vcpu is None:
            vcpu = lib.XE_L2_OWN_VCPU
        elif not 0 <= vcpu <= 0xFFFFFFFF:
            vcpu = 0xFFFFFFFE  # no domain has that vCPU: C refuses it after checking the port, as the reference
        return lib.xe_l2_guest_unmask(self._d, self._port(port), vcpu, lib.XE_L2_UNMASK_HVM if hvm else 0)

    def guest_clear_pending(self, port: int) -> int:
        return lib.xe_l2_guest_clear_pending(self._d, self._port(port))
