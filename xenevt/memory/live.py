"""The memory source "the backend's own view": the simulator's live state file (or, on Xen, this kernel's).

The backend says where a domain's event-channel memory is (``fifo_memory``:
the simulator's image holds both ABIs' sections, its ABI word says which is
in use) and maps
its frames (``map_frames``); this source copies them once, so a dump is of
one moment.  The backend is handed in, never imported: the memory layer does
not choose backends.
"""

from __future__ import annotations

from .. import abi
from ..dump.decode import abi_of
from ..engine import DomainMemory
from ..ports import PortStatus
from .base import EventImage, MemoryBackend, MemorySource


class LiveSource(MemorySource):
    def __init__(self, backend: MemoryBackend, domain: int):
        self.backend, self.domain = backend, domain
        self.kind = f"the {backend.name} backend"

    def image(self) -> EventImage:
        data, settled = self.backend.fifo_memory(self.domain).settled_snapshot()
        mem = DomainMemory(bytearray(data))
        name = self.backend.name
        # the simulator's memory carries the hypervisor's channel table, its size the domain's limit (on Xen,
        # this kernel's array has no table and its size is no limit: shown as dump always has); on 2-level
        # Xen's limit is the bitmaps' 4096 ports
        limit = mem.nr_chans if abi_of(mem) == "FIFO" else min(mem.nr_chans, abi.EVTCHN_2L_NR_CHANNELS)
        # the guest's own queue state is exact where no upcall ran while it was copied; else the queues read
        # as frames read outside the guest do (one sample cannot tell an upcall midway from a lost event)
        return EventImage(mem, self.domain, name, guest_known=settled, max_ports=limit, channel_table=True,
                          saved_source=f"{name} domain {self.domain}",
                          vcpu_states=self.backend.vcpu_states(self.domain))

    def channels(self) -> dict[int, PortStatus]:
        return self.backend.channels(self.domain)

    def read_frames(self, gfns: list[int]) -> list[bytes]:
        return self.backend.map_frames(self.domain, list(gfns))
