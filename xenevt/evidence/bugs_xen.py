"""Historical bugs of Xen's event-channel code outside the FIFO queues (xen/common/event_channel.c: allocation,
close, reset, limits, control blocks), and their signatures (history.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .history import bug, signature

if TYPE_CHECKING:
    from .model import DomainFacts
    from .report import Finding

# --- allocation: get_free_port() -------------------------------------------------------------------------------

bug("xen-reuse-busy-port", "Xen", "a port closed while its event was still LINKED handed out again at once",
    "Xen 78e24c269b (\"evtchn: don't reuse ports that are still busy\", 4.7, 2015)",
    "the reused port's first event finds its word still LINKED on the old port's queue: PENDING set, nothing "
    "linked where the new channel points, its vCPU never told; the event waits on (or is taken by) another "
    "vCPU's queue")


@signature("xen-reuse-busy-port")
def _reused_while_linked(f: Finding, dom: DomainFacts) -> bool:
    # an IPI or a per-vCPU VIRQ cannot move, so LINKED on another vCPU's queue it was linked there before the
    # port was bound: a closed port still LINKED, handed out again
    return f.rule == "queued-on-wrong-vcpu"
