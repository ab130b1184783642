"""An open host's C hot path (hot.HotHost over csrc/simhost.c), made on first use: the part the hypercalls, the
guest kernel and the status read each hold, so that one C view serves them all."""

from __future__ import annotations

import os

from .hot import HotHost
from .stats import Stats
from .store import HostFile

HOT_ENV = "XENEVT_SIM_HOT"  # "python": the hypercalls' Python path only (the reference the C hot path is held to)


class HotPath:
    """``made`` is the C view and ``h`` its ``xe_host`` pointer, once ``get()`` made them (None before, and for a
    host without one: read-only, the lock unusable, or the Python reference asked for)."""

    def __init__(self, file: HostFile, stats: Stats):
        self.file = file
        self.stats = stats
        self.unmade = not (file.read_only or os.environ.get(HOT_ENV) == "python")  # (until get() has tried)
        self.made: HotHost | None = None
        self.h = None

    def get(self) -> HotHost | None:
        """The C view, made on the first call; None where this host has none."""
        if self.unmade:
            self.unmade = False
            if self.file.hostlock.usable:
                self.made = HotHost(self.file, self.stats.view())
                self.h = self.made.h
        return self.made

    def close(self) -> None:
        """Let the C views of the mappings go (before the files' own mappings close)."""
        made, self.made, self.h, self.unmade = self.made, None, None, False
        if made is not None:
            made.close()
