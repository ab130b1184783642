"""The one interface every memory source offers, and the image it hands to dump and doctor.

A source is one domain's memory from one place.  It gives the image of the
ABI the domain is on: FIFO (the event-array pages, the control blocks and,
where it knows them, Linux's local READY and heads) or 2-level (shared_info's
bitmaps, each vCPU's vcpu_info and, where it knows them, Linux's scan
position and per-CPU port masks), in one DomainMemory whose ABI word says
which; and the raw reads it can do: guest frames by number, a kernel
symbol's bytes.  What a source cannot do raises MemoryUnavailable, so
callers ask and report instead of checking which source they hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..errors import BackendUnavailable

if TYPE_CHECKING:
    from ..engine import DomainMemory
    from ..ports import PortStatus

T = TypeVar("T")

KCORE = "/proc/kcore"  # this kernel's memory, symbols and CPUs, where kcore.py reads them (the defaults of Ask)
KALLSYMS = "/proc/kallsyms"
CPUS_POSSIBLE = "/sys/devices/system/cpu/possible"


class MemoryUnavailable(BackendUnavailable):
    """This source cannot read that (a file has no frame numbers, a frame mapping no symbols)."""


class MemoryBackend(Protocol):
    """What memory sources ask of the backend they are handed: the part of the Backend protocol
    (xenevt/backend/base.py, which extends this one) that reads a domain's memory.  Defined here because the
    memory layer sits below the backends: it is given one, never imports one.  A backend that cannot do one of
    these raises BackendUnavailable from it."""

    name: str

    def domains(self) -> list[int]: ...

    def fifo_memory(self, domain: int) -> DomainMemory:
        """The domain's event-channel memory as the backend sees it (the simulator's image, this kernel's)."""
        ...

    def channels(self, domain: int) -> dict[int, PortStatus]:
        """Every open port's status, keyed by port: what dumps annotate words with."""
        ...

    def vcpu_states(self, domain: int) -> list[str] | None:
        """Each vCPU's state ("online", "down", "never up"), where the backend knows it; None where not."""
        ...

    def map_frames(self, domain: int, gfns: list[int]) -> list[bytes]:
        """Copies of the domain's frames ``gfns`` (4 KiB each, in order), as privcmd maps them."""
        ...

    def translate_address(self, domain: int, vcpu: int, virt: int) -> int | None:
        """The frame behind the domain's kernel virtual address ``virt`` as vCPU ``vcpu``'s page tables map it
        (what map_frames takes); None where nothing is mapped there."""
        ...

    def shared_info_frame(self, domain: int) -> tuple[int, int | None]:
        """(the domain's shared_info frame, its vCPU count where known), as XEN_DOMCTL_getdomaininfo says."""
        ...


@dataclass
class EventImage:
    """One domain's event-channel memory as a source holds it, copied: decoding it later cannot disturb the
    source.

    ``mem`` is a DomainMemory.  FIFO: event-array pages, control blocks (None for a vCPU without one) and,
    if ``guest_known``, Linux's local READY and heads (``cpu_queue``), which say a queue is being consumed.
    2-level: shared_info's bitmaps and vcpu_infos (``vcpu_known``: whose were read; None: all) and, if
    ``guest_known``, Linux's scan position and which CPU each port is delivered on."""

    mem: DomainMemory
    domain: int
    source: str                   # where it came from, as a dump's "source:" line says it
    guest_known: bool             # mem holds Linux's local READY/heads
    max_ports: int | None = None  # the domain's event-channel limit, where the source knows it
    channel_table: bool = False   # mem's channel records are the hypervisor's table: a raw save keeps them
    saved_source: str = ""  # what a raw dump's header records, where it says more than ``source`` (default: it)
    vcpu_known: list[bool] | None = None  # 2-level: which vCPUs' vcpu_info the source read (None: all)
    vcpu_states: list[str] | None = None  # each vCPU "online", "down" or "never up", where the source knows

    def __post_init__(self) -> None:
        if not self.saved_source:
            self.saved_source = self.source

    @property
    def abi(self) -> str:
        """"FIFO" or "2-level"."""
        from ..dump.decode import abi_of

        return abi_of(self.mem)


FifoImage = EventImage  # the name from before 2-level images


class MemorySource:
    """One domain's memory.  Subclasses override what their source can read; the rest is unavailable."""

    kind = "this source"  # for messages: "a raw dump file", "this kernel", …
    domain: int

    def image(self) -> EventImage:
        """The domain's event-channel memory, of the ABI it is on."""
        raise MemoryUnavailable(f"{self.kind} holds no event-channel memory")

    def fifo_image(self) -> EventImage:
        """The name callers used before 2-level images: the same image (its ``abi`` says which)."""
        return self.image()

    def channels(self) -> dict[int, PortStatus] | None:
        """The hypervisor's channel table of the domain (open ports), where this source can tell; else None."""
        return None

    def read_frames(self, gfns: list[int]) -> list[bytes]:
        """The guest frames ``gfns`` (4 KiB each, in order), read-only."""
        raise MemoryUnavailable(f"{self.kind} cannot read guest frames by number")

    def read_symbol(self, name: str, size: int, offset: int = 0) -> bytes:
        """``size`` bytes at the guest kernel's symbol ``name`` plus ``offset``."""
        raise MemoryUnavailable(f"{self.kind} cannot read kernel symbols")


def guest_state(mem: DomainMemory) -> bytes:
    """Linux's own per-CPU event state in ``mem``: what an upcall under way moves (FIFO: each CPU's local READY
    and queue heads; 2-level: each CPU's scan position)."""
    from ..engine.layout import ABI_FIFO

    if mem.geometry.version < 2 or mem.event_abi == ABI_FIFO:
        return b"".join(bytes(mem.guest(v)) for v in range(mem.nr_vcpus))
    return b"".join(bytes(mem.l2_scan(v)) for v in range(mem.nr_vcpus))


def read_twice(read: Callable[[], T], mem_of: Callable[[T], DomainMemory]) -> tuple[T, bool]:
    """A running kernel read twice: the second read, and whether Linux's own per-CPU state was the same in both.
    Its upcall takes no lock, so a read can land inside one (a LINK cleared, the local head not yet moved on);
    one that moved between the reads is read as frames outside the guest are (a finding needs a second sample).
    One stalled inside an upcall across both reads still passes: rare on a running kernel, where an upcall takes
    microseconds."""
    first = guest_state(mem_of(read()))
    second = read()
    return second, guest_state(mem_of(second)) == first
