"""What every open simulated host reads through: the open file's facts and the read calls, over the read parts.

A HostView is handed the parts that read (the file, counters, access, the bulk reader, frames, the 'e' text,
xenstore names) and binds their calls by name, once, for both hosts: readhost.SimReadHost is a view opened
read-only; host.SimHost is a view that also holds the hypercalls and the guest side.  The facts are properties
because the file re-reads its domains when the host grows (store.HostFile.reload).
"""

from __future__ import annotations

from typing import Self

from ..errors import StateError
from .access import Access
from .console import Console
from .domain import SimDomain
from .foreign import ForeignFrames
from .lateeoi import Counters, LateEoi
from .reader import Reader, host_info
from .statedir import StateDir
from .stats import Stats
from .store import HostFile
from .xenstore import SimXenstore


class HostView:
    """The read half of a simulated host: SimReadHost is one, SimHost is one with the write parts too."""

    def __init__(self, file: HostFile, stats: Stats, access: Access, reader: Reader, frames: ForeignFrames,
                 console: Console, xenstore: SimXenstore):
        self.file, self.stats, self.access, self.reader = file, stats, access, reader
        self.frames, self.console, self.xenstore = frames, console, xenstore
        self.lateeoi = LateEoi(file, self)  # (its serve and push need a SimHost's calls: SimHost binds them)

        # the reads others make, each its part's own method (no wrapper frame on the list/status paths)
        self.status = reader.status
        self.port_table = reader.port_table
        self.list_ports = reader.list_ports
        self.domain = access.domain
        self.permit = access.permit
        self.permit_host = access.permit_host
        self.may = access.may
        self.check_access = access.check_access
        self.debug_key_e = console.debug_key_e
        self.debug_key_e_rows = console.debug_key_e_rows
        self.gfns = frames.gfns
        self.frame_offsets = frames.frame_offsets
        self.read_frames = frames.read_frames
        self.xenstore_nodes = xenstore.xenstore_nodes

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

    def counters(self, domid: int) -> list[tuple[int, int]]:
        """(raised, delivered) per port of the domain, since the host was made."""
        return self.stats.counters(self.access.domain(domid, "count events of"))

    def xenbus_counters(self, domid: int) -> list[tuple[str, str, Counters]]:
        """The domain's PV devices' lateeoi counters, as its sysfs shows them (lateeoi.LateEoi.xenbus); none where
        the kernels' records cannot be read (refused by the state directory's policy: the port rows still count)."""
        self.access.domain(domid, "count events of")
        try:
            return self.lateeoi.xenbus(domid, self.xenstore_nodes())
        except StateError:
            return []

    def info(self) -> dict:
        return host_info(self.file, self.frames)

    def close(self) -> None:
        """The counters' view of the mapping first, then the file."""
        if self.file.closed:
            return
        self.lateeoi.close()
        self.stats.close()
        self.file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
