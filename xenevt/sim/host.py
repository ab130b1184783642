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
``lifecycle`` vCPUs going down and up (lifecycle.py); ``lateeoi`` the PV drivers' lateeoi handling and its
delayed EOIs (lateeoi.py);
``reader`` the status reads in bulk (reader.py); ``console`` the 'e' debug key (console.py); ``frames`` foreign
mappings (foreign.py); ``xenstore`` the nodes that name ports (xenstore.py).  A host opened only to inspect is
readhost.SimReadHost, made of the read parts alone; both are a HostView (view.py), which holds the read parts and
gives the file's facts and the read calls.

SimHost's calls are its parts' methods, bound by name (here and in HostView: no wrapper frame on the notify path);
everyone else uses SimHost and the functions here.
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
from .lateeoi import LATEEOI_PREFIX, lateeoi_name
from .lifecycle import Lifecycle
from .reader import Reader
from .readhost import SimReadHost
from .statedir import default_state_dir
from .statefile import DEFAULT_XEN, FILE_NAME, XEN_VERSIONS
from .stats import STATS_NAME, Stats
from .store import HostFile
from .view import HostView
from .xenstore import XENSTORE_NAME, SimXenstore

__all__ = ["CONSUME_BATCH", "DEFAULT_XEN", "FILE_NAME", "XEN_VERSIONS", "LATEEOI_PREFIX", "LOCK_NAME", "STATS_NAME",
           "SimDomain", "lateeoi_name",
           "SimHost", "SimReadHost", "XENSTORE_NAME", "chan_status", "create_host", "default_state_dir"]


class SimHost(HostView):
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
        file = HostFile(state_dir or default_state_dir(), read_only)
        stats = Stats(file)
        self.hot = hot = HotPath(file, stats)
        access = Access(file)
        self.effects = Effects(file, stats)
        self.consumers = Consumers(file, self.effects)
        self.journal = Journal(file, self.effects, self.consumers)
        self.binds = Binds(file, access, self.effects, self.journal, hot)
        self.xen = Hypercalls(file, access, self.effects, self.journal, hot)
        self.guest = GuestKernel(file, access, self.effects, self.consumers, hot, stats)
        self.lifecycle = Lifecycle(file, access, self.journal, self.binds, self.xen, self.guest, self.consumers)
        reader = Reader(file, access, hot)
        super().__init__(file, stats, access, reader, ForeignFrames(file, access), Console(file, reader),
                         SimXenstore(file, access, self.binds))

        # the calls others make that change the host, each its part's own method (the reads: HostView's)
        binds, xen, guest = self.binds, self.xen, self.guest
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
        self.serve = self.lateeoi.serve
        self.push = self.lateeoi.push
        self.vcpu_op = self.lifecycle.vcpu_op
        self.cpu_down = self.lifecycle.cpu_down
        self.cpu_up = self.lifecycle.cpu_up

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

    def device_add(self, kind: str, domid: int, backend: int = 0, queues: int = 1, caller: int = 0) -> dict:
        """xenstore.device_add, then each vif's and vbd's channel bound with the lateeoi chip at both ends, as
        netback/blkback and (since XSA-391) netfront/blkfront bind theirs; a console's and xenstore's are not."""
        made = self.xenstore.device_add(kind, domid, backend, queues, caller)
        if kind in ("vif", "vbd"):
            for p in made["ports"]:
                self.lateeoi.bind(domid, p["port"])
                self.lateeoi.bind(backend, p["peer"])
        return made

    def fileno(self) -> int:
        return self.file.fd

    def locked(self, check_only: bool = False) -> AbstractContextManager[None]:
        """The hypervisor's event lock (HostFile.locked)."""
        return self.file.locked(check_only)

    def check_current(self) -> None:
        self.file.check_current()

    def close(self) -> None:
        """The parts with views of the mappings first (the C hot path, the consumers' pids, then the view's)."""
        if self.file.closed:
            return
        self.hot.close()
        self.consumers.release()
        super().close()
