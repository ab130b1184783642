"""One domain's event-channel memory in one buffer: the layout both engines work on (its numbers and structs;
domainmem.DomainMemory reads and writes an image by them).

The same layout serves an in-memory ``bytearray`` (tests), a region of the
simulator's memory-mapped state file, and a saved dump, so the engines never
care where the bytes live.  Sections, each 64-byte aligned:

* header page: magic, geometry, array size, a count of ports freed (so a
  cached lowest-free-port hint can be revalidated), per-vCPU control-block
  offsets, per-vCPU online state (``VCPU_STATE_OFFSET``: zero in images made
  before it, which read as every vCPU online);
* the event array: ``max_pages`` pages of 1024 event words (Xen's view);
* one guest page per vCPU holding its control block at a chosen offset;
* hypervisor-private: queue tails (``vcpu * 16 + priority``) and channels;
* guest-private: Linux's per-CPU queue heads and local READY per vCPU;
* (version 2) the 2-level ABI's memory: a page laid out as Xen's
  ``shared_info`` for a 64-bit guest as far as events go (``vcpu_info[32]`` at
  0, ``evtchn_pending[64]`` at 2048, ``evtchn_mask[64]`` at 2560), the
  ``vcpu_info`` of vCPUs 32 and up after it, then Linux's per-vCPU scan
  position (``xe_l2_scan``: the word and bit its 2-level upcall resumes at).

The header says which ABI the domain is on (``ABI_WORD``: a domain starts on
2-level and is on FIFO once a control block is registered, back on 2-level
after EVTCHNOP_reset) and how many ports Xen has channel structures for
(``VALID_WORD``: Xen's ``valid_evtchns``, grown a bucket at a time, never
shrunk).  Version 1 images (raw dumps made before version 2) have neither:
they read as FIFO with every port valid.
"""

from __future__ import annotations

import struct
import sys

from .. import abi
from ..errors import XenevtError

if sys.byteorder != "little":  # pragma: no cover - Xen's FIFO ABI is little-endian on x86/Arm
    raise ImportError("xenevt's memory layouts assume a little-endian host")

MAGIC = 0x4D444558  # "XEDM"
LAYOUT_VERSION = 2  # 2: the 2-level section, the ABI and valid-ports words
LAYOUT_VERSIONS = (1, 2)  # what attaches (1: FIFO only, as raw dumps made before 2-level hold)
MAX_VCPUS = 256
HEADER = struct.Struct("<IIIIIII")  # magic, version, nr_vcpus, max_pages, nr_pages, nr_chans, generation
HEADER_FIELDS = {"magic": 0, "version": 4, "nr_vcpus": 8, "max_pages": 12, "nr_pages": 16, "nr_chans": 20,
                 "generation": 24}  # byte offsets, for errors
FREES_WORD = 7  # u32 after HEADER: bumped each time a channel is freed (0 in files made before it existed)
ABI_WORD = 8  # u32 after FREES_WORD (version 2): ABI_2L or ABI_FIFO
ABI_2L, ABI_FIFO = 0, 1
VALID_WORD = 9  # u32 (version 2): ports below it have channel structures in Xen (valid_evtchns)
EVTCHNS_PER_BUCKET = 64  # Xen: PAGE_SIZE / sizeof(struct evtchn) (64 bytes, cache-line aligned)
CB_STATE_OFFSET = 64  # u32 per vCPU: 0 = no control block, else offset + 1
UPCALL_OFFSET = 2048  # u32 per vCPU: bumped on each upcall (vcpu_info's upcall_pending, a futex word)
UPCALL_COUNT = 0x7FFFFFFF  # its count; bit 31: a consumer sleeps on it (XE_UPCALL_WAITERS)
CONSUMER_OFFSET = 3072  # u32 per vCPU: pid of the process consuming as this vCPU, 0 if none
# u8 per vCPU: VCPU_ONLINE (0: every image made before it reads so), VCPU_DOWN (VCPUOP_down after it ran: its control
# block and queues kept), VCPU_NEVER_UP (a vCPU beyond the online count at boot, maxvcpus: never initialised)
VCPU_STATE_OFFSET = 1536
VCPU_ONLINE, VCPU_DOWN, VCPU_NEVER_UP = 0, 1, 2
VCPU_STATES = {VCPU_ONLINE: "online", VCPU_DOWN: "down", VCPU_NEVER_UP: "never up"}
CHAN = struct.Struct("<BBBBHHHHI")  # xe_chan
GUEST_VCPU = struct.Struct("<I16I")  # xe_guest_vcpu
GUEST_READY_BITS = 0xFFFF  # its ready word: the READY bits below, the upcall count above (odd: one runs)
GUEST_UPCALL_ONE = 0x10000
TAILS_PER_VCPU = abi.EVTCHN_FIFO_MAX_QUEUES
# the 2-level section: Xen's shared_info (public/xen.h, x86_64) as far as events go, and vcpu_info
L2_SHARED_VCPUS = 32  # XEN_LEGACY_MAX_VCPUS: vcpu_info slots inside shared_info
VCPU_INFO = struct.Struct("<BB6xQ")  # evtchn_upcall_pending, evtchn_upcall_mask, evtchn_pending_sel
VCPU_INFO_SIZE = 64  # struct vcpu_info (arch_vcpu_info and vcpu_time_info follow the fields above)
L2_PENDING = 2048  # shared_info.evtchn_pending[64] (xen_ulong_t)
L2_MASK = 2560  # shared_info.evtchn_mask[64]
L2_WORDS = 64  # xen_ulong_t words per bitmap: 64 * 64 = EVTCHN_2L_NR_CHANNELS ports
L2_SCAN = struct.Struct("<II")  # xe_l2_scan: Linux's current_word_idx, current_bit_idx per vCPU

# xe_chan.flags (csrc/xenevt_fifo_api.h; declared here, beside xe_chan, so that opening a host needs no enum of
# codes.py: codes re-exports them)
CHAN_DEFERRED = 1  # XE_CHAN_DEFERRED: Xen's evtchn->pending, set and never cleared
CHAN_XEN = 2  # XE_CHAN_XEN: a port Xen itself consumes (an ioreq server's, a vm_event ring's)

# byte offsets of xe_chan's fields, for errors and single-field stores
CHAN_FIELDS = {"state": 0, "priority": 1, "last_priority": 2, "flags": 3, "notify_vcpu": 4, "last_vcpu": 6,
               "remote_dom": 8, "aux": 10, "remote_port": 12}


class LayoutError(XenevtError, ValueError):
    """The buffer does not hold a valid domain image (names the field and value).

    Errors about bytes of an attached image read ``ORIGIN: offset 0x…: field F: why``,
    where ORIGIN says whose bytes they are (``state file PATH`` for the simulator)
    and the offset counts from the start of that buffer.
    """

    def __init__(self, message: str, *, offset: int | None = None, field: str | None = None):
        super().__init__(message)
        self.offset = offset
        self.field = field


def _align(n: int, a: int = 64) -> int:
    return (n + a - 1) // a * a


class Record:
    """What ``@dataclass`` gives a class of plain fields (``_FIELDS``, in order): equality field by field with its
    own class, and a repr naming each.  Written out here because making a dataclass compiles its methods when
    the module is imported, about 1 ms a class on the start of every command that opens a host (issue 15)."""

    _FIELDS: tuple[str, ...] = ()
    __hash__ = None  # type: ignore[assignment]  # (as a dataclass with eq: unhashable unless frozen; typeshed's idiom)

    def _values(self) -> tuple:
        return tuple(getattr(self, k) for k in self._FIELDS)

    def __eq__(self, other):
        return self._values() == other._values() if other.__class__ is self.__class__ else NotImplemented

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self._FIELDS)})"


class FrozenRecord(Record):
    """A Record made once and never changed, as ``@dataclass(frozen=True)`` makes it: hashable, its fields set
    only by ``_set`` (in ``__init__``), copied and pickled through its constructor."""

    def _set(self, *values) -> None:
        for key, value in zip(self._FIELDS, values, strict=True):
            object.__setattr__(self, key, value)

    def __hash__(self) -> int:  # type: ignore[override]  # (hashable again, as a frozen dataclass is)
        return hash(self._values())

    def __reduce__(self):
        return type(self), self._values()

    def __setattr__(self, key, value):
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot assign to field {key!r}")

    def __delattr__(self, key):
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot delete field {key!r}")


class Geometry(FrozenRecord):
    """The sizes a domain image is laid out from (immutable, hashable: a frozen record)."""

    _FIELDS = ("nr_vcpus", "max_pages", "nr_chans", "version")
    nr_vcpus: int
    max_pages: int
    nr_chans: int
    version: int

    def __init__(self, nr_vcpus: int, max_pages: int, nr_chans: int, version: int = LAYOUT_VERSION):
        self._set(nr_vcpus, max_pages, nr_chans, version)

    def validate(self) -> None:
        if not 1 <= self.nr_vcpus <= MAX_VCPUS:
            raise LayoutError(f"vCPU count {self.nr_vcpus} out of range 1..{MAX_VCPUS}", field="nr_vcpus")
        if not 1 <= self.max_pages <= abi.MAX_EVENT_ARRAY_PAGES:
            raise LayoutError(f"event array size {self.max_pages} pages out of range 1..{abi.MAX_EVENT_ARRAY_PAGES}",
                              field="max_pages")
        if not 2 <= self.nr_chans <= abi.EVTCHN_FIFO_NR_CHANNELS:
            raise LayoutError(f"channel count {self.nr_chans} out of range 2..{abi.EVTCHN_FIFO_NR_CHANNELS}",
                              field="nr_chans")

    @property
    def pages_offset(self) -> int:
        return abi.PAGE_SIZE

    @property
    def cb_pages_offset(self) -> int:
        return self.pages_offset + self.max_pages * abi.PAGE_SIZE

    @property
    def tails_offset(self) -> int:
        return self.cb_pages_offset + self.nr_vcpus * abi.PAGE_SIZE

    @property
    def guest_offset(self) -> int:
        return _align(self.tails_offset + self.nr_vcpus * TAILS_PER_VCPU * 4)

    @property
    def chans_offset(self) -> int:
        return _align(self.guest_offset + self.nr_vcpus * GUEST_VCPU.size)

    @property
    def l2_offset(self) -> int:
        """The 2-level section's shared page (version 2; page aligned, as Xen's shared_info is a page)."""
        return _align(self.chans_offset + self.nr_chans * CHAN.size, abi.PAGE_SIZE)

    @property
    def l2_vcpu_extra_offset(self) -> int:
        """vcpu_info of vCPUs ``L2_SHARED_VCPUS`` and up (Linux registers them outside shared_info)."""
        return self.l2_offset + abi.PAGE_SIZE

    @property
    def l2_scan_offset(self) -> int:
        return _align(self.l2_vcpu_extra_offset + max(self.nr_vcpus - L2_SHARED_VCPUS, 0) * VCPU_INFO_SIZE)

    def vcpu_info_offset(self, vcpu: int) -> int:
        if vcpu < L2_SHARED_VCPUS:
            return self.l2_offset + vcpu * VCPU_INFO_SIZE
        return self.l2_vcpu_extra_offset + (vcpu - L2_SHARED_VCPUS) * VCPU_INFO_SIZE

    @property
    def size(self) -> int:
        if self.version < 2:
            return _align(self.chans_offset + self.nr_chans * CHAN.size, abi.PAGE_SIZE)
        return _align(self.l2_scan_offset + self.nr_vcpus * L2_SCAN.size, abi.PAGE_SIZE)


class Chan(Record):
    """A channel's hypervisor-private fields (``xe_chan``), in its order."""

    _FIELDS = ("state", "priority", "last_priority", "flags", "notify_vcpu", "last_vcpu", "remote_dom", "aux",
               "remote_port")

    def __init__(self, state: int = 0, priority: int = abi.EVTCHN_FIFO_PRIORITY_DEFAULT, last_priority: int = 0,
                 flags: int = 0, notify_vcpu: int = 0, last_vcpu: int = 0, remote_dom: int = 0, aux: int = 0,
                 remote_port: int = 0):
        self.state = state
        self.priority = priority
        self.last_priority = last_priority
        self.flags = flags
        self.notify_vcpu = notify_vcpu
        self.last_vcpu = last_vcpu
        self.remote_dom = remote_dom
        self.aux = aux
        self.remote_port = remote_port
