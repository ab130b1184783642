"""A simulated host opened to inspect (``list``, ``status``, ``dump``, ``doctor``): the read parts alone.

It holds what it reads through (the file, mapped as a private copy; access; the bulk reader; counters, the 'e'
text, frames and xenstore names) and imports neither the hypercalls nor the guest kernel, so ``list`` and
``status`` start fast.  An update a killed process left under way is finished in the private copy by the same
journal and effects SimHost holds (journal.py, effects.py), made only when the journal says so.
"""

from __future__ import annotations

from .access import Access
from .console import Console
from .domain import SimDomain
from .foreign import ForeignFrames
from .reader import Reader, host_info
from .statedir import StateDir, default_state_dir
from .stats import Stats
from .store import HostFile
from .xenstore import SimXenstore


class SimReadHost:
    """A host opened ``read_only``, as SimHost reads it."""

    def __init__(self, state_dir: str | None = None, recover: bool = True, check_records: bool = True):
        self.file = file = HostFile(state_dir or default_state_dir(), read_only=True)
        self.stats = Stats(file)
        self.access = Access(file)
        self.reader = Reader(file, self.access)
        self.frames = ForeignFrames(file, self.access)
        self.console = Console(file, self.reader)
        self.xenstore = SimXenstore(file, self.access)

        self.status = self.reader.status
        self.port_table = self.reader.port_table
        self.list_ports = self.reader.list_ports
        self.domain = self.access.domain
        self.permit = self.access.permit
        self.permit_host = self.access.permit_host
        self.may = self.access.may
        self.check_access = self.access.check_access
        self.debug_key_e = self.console.debug_key_e
        self.gfns = self.frames.gfns
        self.frame_offsets = self.frames.frame_offsets
        self.read_frames = self.frames.read_frames
        self.xenstore_nodes = self.xenstore.xenstore_nodes

        def at_open() -> None:
            if recover and file.journal_marked():
                self._replay()
            if check_records:
                self.reader.check_tables()  # (the copies checked are remembered: port_table reads them)

        file.open(at_open)

    def _replay(self) -> None:
        """The journal's recovery into the private copy (the same parts SimHost holds, made for this once)."""
        from .consumers import Consumers
        from .effects import Effects
        from .journal import Journal

        effects = Effects(self.file, self.stats)
        Journal(self.file, effects, Consumers(self.file, effects)).recover()

    @property
    def domains(self) -> dict[int, SimDomain]:
        return self.file.domains

    @property
    def gone(self) -> dict[int, SimDomain]:
        return self.file.gone

    @property
    def recovered(self) -> list[str]:
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
        return True

    @property
    def xen_version(self) -> str:
        return self.file.xen_version

    def counters(self, domid: int) -> list[tuple[int, int]]:
        """(raised, delivered) per port of the domain, since the host was made."""
        return self.stats.counters(self.access.domain(domid, "count events of"))

    def info(self) -> dict:
        return host_info(self.file, self.frames)

    def close(self) -> None:
        if self.file.closed:
            return
        self.stats.close()
        self.file.close()

    def __enter__(self) -> SimReadHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
