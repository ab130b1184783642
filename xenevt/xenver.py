"""What differs between Xen versions, in one table consulted by name.

Code that depends on the hypervisor's version asks ``behaves(version,
BEHAVIOUR)`` instead of comparing version strings, so a new Xen release (or
a newly found difference) is one row here.  Each row cites the Xen change
that makes the difference.  ``SIMULATED`` are the versions whose differences
the simulator follows (``xenevt sim init --xen``).  Nothing here imports the
rest of xenevt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["SIMULATED", "XEN_OWNED_STATUS_HIDDEN", "Behaviour", "behaves", "code", "parse"]


@dataclass(frozen=True)
class Behaviour:
    """A behaviour Xen shows from release ``first`` up to ``last`` (None: every release since)."""

    name: str
    first: tuple[int, int]
    last: tuple[int, int] | None
    what: str    # the behaviour, one line
    source: str  # the Xen change (commit, patch or header) that makes the difference

    @property
    def span(self) -> str:
        """The releases, as messages write them: "4.15 to 4.18", "4.19 and later"."""
        first = f"{self.first[0]}.{self.first[1]}"
        return f"{first} and later" if self.last is None else f"{first} to {self.last[0]}.{self.last[1]}"


# EVTCHNOP_status on a port whose consumer is Xen itself (an ioreq server's or a vm_event ring's) fails with
# EACCES: added in 4.15 by "evtchn: refuse EVTCHNOP_status for Xen-bound event channels" (Jan Beulich,
# xen-devel 2020-09-28, xen/common/event_channel.c: evtchn_status, consumer_is_xen); 4.19 reports such ports
# again (as this project's real-Xen runs on 4.20 observe: the reverting commit is not pinned here).
XEN_OWNED_STATUS_HIDDEN = Behaviour(
    "xen-owned-status-hidden", (4, 15), (4, 18),
    "EVTCHNOP_status refuses a port Xen itself consumes (EACCES)",
    "xen/common/event_channel.c evtchn_status: 'evtchn: refuse EVTCHNOP_status for Xen-bound event channels'")

SIMULATED = ("4.17", "4.20")  # the versions the simulator follows: one on each side of every row above

_VERSION = re.compile(r"(\d+)\.(\d+)")


@lru_cache(maxsize=64)
def parse(version: str) -> tuple[int, int] | None:
    """(major, minor) of "4.17", "4.17.3", "4.20-rc" (what /sys/hypervisor and `xl info` give); None if not one."""
    m = _VERSION.match(version)
    return (int(m[1]), int(m[2])) if m else None


def behaves(version: str | None, behaviour: Behaviour) -> bool:
    """Whether Xen ``version`` shows ``behaviour``; False for an unknown or unparsable version."""
    v = parse(version) if version else None
    if v is None:
        return False
    return behaviour.first <= v and (behaviour.last is None or v <= behaviour.last)


def code(version: str) -> int:
    """The version as one number, major << 8 | minor (how the simulator's state file records it)."""
    v = parse(version)
    if v is None:
        raise ValueError(f"not a Xen version: {version!r}")
    return v[0] << 8 | v[1]
