"""The embedded simulated Xen host: a SimHost holds its parts, each a class with one job, each given what it needs.

One memory-mapped file holds every domain's FIFO memory (the engine's
DomainMemory layout), so several processes share one host: hypervisor-side
operations take the host lock kept in the file (Xen's event lock: a robust,
process-shared mutex), guests consume lock-free with atomics on the shared
words, and a consumer sleeps on its vCPU's upcall word (futex) until an event
is raised.  The hot hypercalls run in C (hot.py, csrc/simhost.c).

The parts, from the bottom: ``file`` the open state file, its lock and size guard (store.py; made by create.py,
laid out by statefile.py); ``stats`` the activity counters (stats.py); ``hot`` the C hot path (hotpath.py);
``access`` who may call (access.py); ``effects`` Xen's restartable steps (effects.py) and ``journal`` the intent
record and the recovery that replays it (journal.py); ``consumers`` one consumer per vCPU (consumers.py);
``binds`` and ``xen`` the hypercalls (binds.py, hypercalls.py); ``guest`` the guest kernel's own acts (guest.py);
``reader`` the status reads in bulk (reader.py); ``console`` the 'e' debug key (console.py); ``frames`` foreign
mappings (foreign.py); ``xenstore`` the nodes that name ports (xenstore.py).  A host opened only to inspect is
readhost.SimReadHost, made of the read parts alone.

SimHost's calls are its parts' methods, bound here by name (no wrapper frame on the notify path); everyone else
uses SimHost and the functions here.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from ..ports import chan_status
from .access import Access
from .binds import Binds
from .console import Console
from .consumers import LOCK_NAME, Consumers
from .create import create_host
from .domain import SimDomain
from .effects import Effects
from .foreign import ForeignFrames
from .guest import CONSUME_BATCH, GuestKernel
from .hotpath import HotPath
from .hypercalls import Hypercalls
from .journal import Journal
from .reader import Reader, host_info
from .readhost import SimReadHost
from .statedir import StateDir, default_state_dir
from .statefile import DEFAULT_XEN, FILE_NAME, XEN_VERSIONS
from .stats import STATS_NAME, Stats
from .store import HostFile
from .xenstore import XENSTORE_NAME, SimXenstore

__all__ = ["CONSUME_BATCH", "DEFAULT_XEN", "FILE_NAME", "XEN_VERSIONS", "LOCK_NAME", "STATS_NAME", "SimDomain",
           "SimHost", "SimReadHost", "XENSTORE_NAME", "chan_status", "create_host", "default_state_dir"]


class SimHost:
    """An open simulated host.  Calls take the calling domain first, as hypercalls do."""

    def __init__(self, state_dir: str | None = None, read_only: bool = False, recover: bool = True,
                 check_records: bool = True):
        """``read_only`` maps a private copy: inspection can never change the shared state.

        The open holds the host lock (shared when read-only), so it never reads a record another process is
        writing.  ``recover`` finishes what a process killed mid-update left (the intent record, a raise under
        way, a consumer gone mid-batch) before the channel records are checked (an intent cut short may have
        left one half written; redoing it writes it whole); read-only, into the private copy only.  ``sim
        check`` opens with ``recover=False, check_records=False`` to see and judge the file as it is.
        """
        self.file = file = HostFile(state_dir or default_state_dir(), read_only)
        self.stats = Stats(file)
        self.hot = HotPath(file, self.stats)
        self.access = Access(file)
        self.effects = Effects(file, self.stats)
        self.consumers = Consumers(file, self.effects)
        self.journal = Journal(file, self.effects, self.consumers)
        self.binds = Binds(file, self.access, self.effects, self.journal, self.hot)
        self.xen = Hypercalls(file, self.access, self.effects, self.journal, self.hot)
        self.guest = GuestKernel(file, self.access, self.effects, self.consumers, self.hot, self.stats)
        self.reader = Reader(file, self.access, self.hot)
        self.frames = ForeignFrames(file, self.access)
        self.console = Console(file, self.reader)
        self.xenstore = SimXenstore(file, self.access, self.binds)

        # the calls others make, each its part's own method
        binds, xen, guest, access = self.binds, self.xen, self.guest, self.access
        self.alloc_unbound = binds.alloc_unbound
        self.bind_interdomain = binds.bind_interdomain
        self.bind_virq = binds.bind_virq
        self.bind_ipi = binds.bind_ipi
        self.xen_port = binds.xen_port
        self.init_control = binds.init_control
        self.expand_array = binds.expand_array
        self.send = xen.send
        self.raise_virq = xen.raise_virq
        self.close_port = xen.close_port
        self.reset = xen.reset
        self.destroy_domain = xen.destroy_domain
        self.pause = xen.pause
        self.set_priority = xen.set_priority
        self.bind_vcpu = xen.bind_vcpu
        self.evtchn_unmask = xen.evtchn_unmask
        self.mask = guest.mask
        self.unmask = guest.unmask
        self.claim_vcpu = guest.claim_vcpu
        self.consume = guest.consume
        self.consumer_live = self.consumers.live
        self.status = self.reader.status
        self.port_table = self.reader.port_table
        self.list_ports = self.reader.list_ports
        self.domain = access.domain
        self.permit = access.permit
        self.permit_host = access.permit_host
        self.may = access.may
        self.check_access = access.check_access
        self.debug_key_e = self.console.debug_key_e
        self.gfns = self.frames.gfns
        self.frame_offsets = self.frames.frame_offsets
        self.read_frames = self.frames.read_frames
        self.xenstore_nodes = self.xenstore.xenstore_nodes
        self.device_add = self.xenstore.device_add

        if recover:
            file.on_take = self.journal.finish  # whoever takes the lock first finishes an update cut short

        def at_open() -> None:
            if recover:
                self.journal.finish()  # read-only: into the private copy, so inspection sees the update whole
            if check_records:
                file.check_records()
            if recover and not read_only:
                self.consumers.recover()

        file.open(at_open)

    # --- the open file's facts --------------------------------------------------------------------------------
    @property
    def domains(self) -> dict[int, SimDomain]:
        return self.file.domains

    @property
    def gone(self) -> dict[int, SimDomain]:
        """Destroyed domains (DOM_GONE): no hypercall finds them."""
        return self.file.gone

    @property
    def recovered(self) -> list[str]:
        """What recovery finished, one line each (sim check, the kill campaign)."""
        return self.file.recovered

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def state_dir(self) -> str:
        return self.file.state_dir

    @property
    def dir(self) -> StateDir:
        return self.file.dir

    @property
    def read_only(self) -> bool:
        return self.file.read_only

    @property
    def xen_version(self) -> str:
        return self.file.xen_version

    def fileno(self) -> int:
        return self.file.fd

    def locked(self, check_only: bool = False) -> AbstractContextManager[None]:
        """The hypervisor's event lock (HostFile.locked)."""
        return self.file.locked(check_only)

    def check_current(self) -> None:
        self.file.check_current()

    def counters(self, domid: int) -> list[tuple[int, int]]:
        """(raised, delivered) per port of the domain, since the host was made."""
        return self.stats.counters(self.access.domain(domid, "count events of"))

    def info(self) -> dict:
        return host_info(self.file, self.frames)

    def close(self) -> None:
        """The parts with views of the mappings first (the C hot path, the counters, the consumers' pids)."""
        if self.file.closed:
            return
        self.hot.close()
        self.stats.close()
        self.consumers.release()
        self.file.close()

    def __enter__(self) -> SimHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
