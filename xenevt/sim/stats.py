"""Activity counters: events raised and delivered per port, what /proc/interrupts counts on a real guest.

They live in their own file beside the state file (made on first use), so
counting never touches the host's records or its lock.
"""

from __future__ import annotations

import mmap
import struct

from .domain import SimDomain
from .statefile import HEADER, host_id
from .store import HostFile

STATS_NAME = "stats.xes"
STATS_MAGIC = b"XEVTSTAT"
STATS_VERSION = 2  # 2: the host identity in the header
STATS_HEADER = struct.Struct("<8sIQQQ")  # magic, version, and the host file's size, creation time and identity


class Stats:
    """The counters file of a host (``file``), mapped on first use."""

    def __init__(self, file: HostFile):
        self.file = file
        self._view: tuple[mmap.mmap, dict[int, int]] | None = None

    def view(self) -> tuple[mmap.mmap, dict[int, int]] | None:
        """The counters file: per domain and port, u64 raised and u64 delivered; made on first use.  Its header
        names the host (its identity, statefile.HOST_ID): another host's counters, even one made in the same
        second, are started again from zero."""
        if self._view is not None:
            return self._view
        file = self.file
        ident = STATS_HEADER.pack(STATS_MAGIC, STATS_VERSION, *HEADER.unpack_from(file.mm, 0)[3:5], host_id(file.mm))
        size = STATS_HEADER.size + sum(16 * d.mem.nr_chans for d in file.domains.values())
        # (two processes starting the same new host at once may each put a file in place: counts made in the
        # first until the second lands are lost, nothing else)
        mm = file.dir.map_own(STATS_NAME, ident, size, file.read_only, ".stats-")
        if mm is None:
            return None  # read-only and never made (or another host's): every counter reads 0
        offsets, off = {}, STATS_HEADER.size
        for domid in sorted(file.domains):
            offsets[domid] = off
            off += 16 * file.domains[domid].mem.nr_chans
        self._view = (mm, offsets)
        return self._view

    def count(self, domid: int, port: int, which: int) -> None:
        """One more event raised (``which`` 0) or delivered (1) on the port."""
        if self.file.read_only:
            return
        view = self.view()
        if view is None:
            return
        mm, offsets = view
        if not 0 <= port < self.file.nr_chans[domid]:
            return  # a word past the channel table (a corrupt LINK can deliver one): nothing to count
        at = offsets[domid] + 16 * port + 8 * which
        struct.pack_into("<Q", mm, at, struct.unpack_from("<Q", mm, at)[0] + 1)

    def reset(self, domid: int, port: int) -> None:
        """A port bound afresh starts from zero, as a new IRQ's row in /proc/interrupts does (its last binding's
        events are not this one's)."""
        if self.file.read_only:
            return
        view = self.view()
        if view is None or not 0 <= port < self.file.nr_chans[domid]:
            return
        mm, offsets = view
        struct.pack_into("<QQ", mm, offsets[domid] + 16 * port, 0, 0)

    def counters(self, dom: SimDomain) -> list[tuple[int, int]]:
        """(raised, delivered) per port of the domain, since the host was made."""
        domid = dom.domid
        view = self.view()
        if view is None:
            return [(0, 0)] * dom.mem.nr_chans
        mm, offsets = view
        return list(struct.iter_unpack("<QQ", mm[offsets[domid]: offsets[domid] + 16 * dom.mem.nr_chans]))

    def close(self) -> None:
        if self._view is not None:
            self._view[0].close()
            self._view = None
