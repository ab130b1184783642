"""The catalogue of historical event-channel bugs (history.py's ``BUGS``) and their signatures, one block a bug:
Xen's FIFO code here, Xen's other event-channel code in bugs_xen.py, Linux's in bugs_linux.py.

Each entry's facts come from its fixing commit or advisory: the order of operations it changed and what that
order left in the event words, queues and counters.  The replays that bring each back are in xenevt/replay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .history import bug, signature

if TYPE_CHECKING:
    from .model import DomainFacts
    from .report import Finding

# --- Xen: xen/common/event_fifo.c ------------------------------------------------------------------------------

bug("xen-ready-every-add", "Xen", "READY set for every event added to a queue, not only for a new head",
    "Xen 70ccddb14a (\"evtchn/fifo: only set READY for new heads\", 4.4, 2013)",
    "the guest drains the queue before READY lands, then takes the stale READY and walks from the stale HEAD "
    "into the queue that port has since joined: one queue's events consumed through another's")


@signature("xen-ready-every-add")
def _stale_head_walked(f: Finding, dom: DomainFacts) -> bool:
    # READY over a head already consumed: a walk from a stale head took it, which only a READY set after the
    # queue was drained (an add at the tail) leads to
    return f.rule == "ready-head-consumed"


from . import bugs_linux, bugs_linux_close, bugs_xen  # noqa: E402,F401  (their entries, after these)
