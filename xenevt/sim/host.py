"""The embedded simulated Xen host: one façade over the simulator's jobs, each in its own module.

One memory-mapped file holds every domain's FIFO memory (the engine's
DomainMemory layout), so several processes share one host: hypervisor-side
operations take the host lock kept in the file (Xen's event lock: a robust,
process-shared mutex), guests consume lock-free with atomics on the shared
words, and a consumer sleeps on its vCPU's upcall word (futex) until an event
is raised.  The hot hypercalls run in C (hot.py, csrc/simhost.c).

The jobs: the state file, its lock and journal (store.py and hot.py; the
format is statefile.py's), the hypercalls by Xen's rules (hypercalls.py; who may call, access.py), the guest
kernel's part (guest.py), activity counters (stats.py), the 'e' console text
(console.py), frames for foreign mappings (foreign.py), the xenstore nodes that name ports
(xenstore.py), every port's status of a domain in bulk (reader.py).  Everyone else uses SimHost and the functions here.
"""

from __future__ import annotations

from ..ports import chan_status
from .access import Access
from .console import Console
from .foreign import ForeignFrames
from .guest import CONSUME_BATCH, LOCK_NAME, GuestKernel
from .hypercalls import Hypercalls
from .reader import Reader, SimReadHost
from .statefile import DEFAULT_XEN, FILE_NAME, XEN_VERSIONS
from .stats import STATS_NAME, Stats
from .store import HostFile, SimDomain, create_host, default_state_dir
from .xenstore import XENSTORE_NAME, SimXenstore

__all__ = ["CONSUME_BATCH", "DEFAULT_XEN", "FILE_NAME", "XEN_VERSIONS", "LOCK_NAME", "STATS_NAME", "SimDomain",
           "SimHost", "SimReadHost", "XENSTORE_NAME", "chan_status",
           "create_host", "default_state_dir", "host_info", "reset_host"]


class SimHost(GuestKernel, Hypercalls, Reader, Access, Stats, Console, ForeignFrames, SimXenstore, HostFile):
    """An open simulated host.  Methods take the calling domain first, as hypercalls do."""


def host_info(state_dir: str | None) -> dict:
    with SimHost(state_dir) as host:
        return host.info()


def reset_host(state_dir: str | None) -> None:
    """Every domain's channels closed, as a toolstack does it: each other domain paused around its reset."""
    with SimHost(state_dir) as host:
        for domid in list(host.domains):
            if domid:
                host.pause(domid)
            host.reset(0, domid)
            if domid:
                host.pause(domid, False)
