"""A simulated host opened to inspect (``list``, ``status``, ``dump``, ``doctor``): the read parts alone.

It is a HostView (view.py) over what it reads through (the file, mapped as a private copy; access; the bulk
reader; counters, the 'e' text, frames and xenstore names) and imports neither the hypercalls nor the guest kernel,
so ``list`` and ``status`` start fast.  An update a killed process left under way is finished in the private copy
by the same journal and effects SimHost holds (journal.py, effects.py), made only when the journal says so.
"""

from __future__ import annotations

from .access import Access
from .console import Console
from .foreign import ForeignFrames
from .reader import Reader
from .statedir import default_state_dir
from .stats import Stats
from .store import HostFile
from .view import HostView
from .xenstore import SimXenstore


class SimReadHost(HostView):
    """A host opened ``read_only``, as SimHost reads it."""

    def __init__(self, state_dir: str | None = None, recover: bool = True, check_records: bool = True):
        file = HostFile(state_dir or default_state_dir(), read_only=True)
        access = Access(file)
        reader = Reader(file, access)
        frames = ForeignFrames(file, access)
        super().__init__(file, Stats(file), access, reader, frames, Console(file, reader), SimXenstore(file, access))

        def at_open() -> None:
            if recover and file.journal_marked():
                self._replay()
            if check_records:
                reader.check_tables()  # (the copies checked are remembered: port_table reads them)

        file.open(at_open)

    def _replay(self) -> None:
        """The journal's recovery into the private copy (the same parts SimHost holds, made for this once)."""
        from .consumers import Consumers
        from .effects import Effects
        from .journal import Journal

        effects = Effects(self.file, self.stats)
        Journal(self.file, effects, Consumers(self.file, effects)).recover()
