"""The one interface every memory source offers, and the FIFO image it hands to dump and doctor.

A source is one domain's memory from one place.  It gives the FIFO image
(the event-array pages, the control blocks and, where it knows them, Linux's
local READY and heads), and the raw reads it can do: guest frames by number,
a kernel symbol's bytes.  What a source cannot do raises MemoryUnavailable,
so callers ask and report instead of checking which source they hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BackendUnavailable

if TYPE_CHECKING:
    from ..engine import DomainMemory
    from ..ports import PortStatus


class MemoryUnavailable(BackendUnavailable):
    """This source cannot read that (a file has no frame numbers, a frame mapping no symbols)."""


@dataclass
class FifoImage:
    """One domain's FIFO memory as a source holds it, copied: decoding it later cannot disturb the source.

    ``mem`` is a DomainMemory: event-array pages, control blocks (None for a vCPU without one) and, if
    ``guest_known``, Linux's local READY and heads (``cpu_queue``), which say a queue is being consumed."""

    mem: DomainMemory
    domain: int
    source: str                   # where it came from, as a dump's "source:" line says it
    guest_known: bool             # mem holds Linux's local READY/heads
    max_ports: int | None = None  # the domain's event-channel limit, where the source knows it
    channel_table: bool = False   # mem's channel records are the hypervisor's table: a raw save keeps them
    saved_source: str | None = None  # what a raw dump's header records, where it says more than ``source``

    def __post_init__(self) -> None:
        if self.saved_source is None:
            self.saved_source = self.source


class MemorySource:
    """One domain's memory.  Subclasses override what their source can read; the rest is unavailable."""

    kind = "this source"  # for messages: "a raw dump file", "this kernel", …
    domain: int

    def fifo_image(self) -> FifoImage:
        """The domain's FIFO memory: event-array pages, control blocks, Linux's local heads where known."""
        raise MemoryUnavailable(f"{self.kind} holds no FIFO event array")

    def channels(self) -> dict[int, PortStatus] | None:
        """The hypervisor's channel table of the domain (open ports), where this source can tell; else None."""
        return None

    def read_frames(self, gfns: list[int]) -> list[bytes]:
        """The guest frames ``gfns`` (4 KiB each, in order), read-only."""
        raise MemoryUnavailable(f"{self.kind} cannot read guest frames by number")

    def read_symbol(self, name: str, size: int, offset: int = 0) -> bytes:
        """``size`` bytes at the guest kernel's symbol ``name`` plus ``offset``."""
        raise MemoryUnavailable(f"{self.kind} cannot read kernel symbols")
