"""An open host's C hot path (hot.HotHost over csrc/simhost.c), made on first use: the part the hypercalls, the
guest kernel and the status read each hold, so that one C view serves them all."""

from __future__ import annotations

import os

from .hot import HotHost
from .stats import Stats
from .store import HostFile

HOT_ENV = "XENEVT_SIM_HOT"  # "python": the hypercalls' Python path only (the reference the C hot path is held to)


class HotPath:
    """``h`` is the C ``xe_host`` pointer once made (None before, and for a host without one); ``get()`` makes it."""

    def __init__(self, file: HostFile, stats: Stats):
        self.file = file
        self.stats = stats
        # None: not made yet; False: none for this host (read-only, the lock unusable, or the Python reference)
        self.host: HotHost | bool | None = False if file.read_only or os.environ.get(HOT_ENV) == "python" else None
        self.h = None

    def get(self) -> HotHost | None:
        """The C view, made on the first call; None where this host has none."""
        if self.host is None:
            self.host = False
            if self.file.hostlock.usable:
                self.host = HotHost(self.file, self.stats.view())
                self.h = self.host.h
        return self.host if isinstance(self.host, HotHost) else None

    def close(self) -> None:
        """Let the C views of the mappings go (before the files' own mappings close)."""
        if isinstance(self.host, HotHost):
            self.h = None
            self.host.close()
        self.host = False
