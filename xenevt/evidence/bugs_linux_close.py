"""Historical bugs of Linux's event-channel code around closing ports and CPU hotplug (drivers/xen/events/), and
their signatures (history.py).  Linux's lateeoi bugs are in bugs_linux.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .history import bug, signature

if TYPE_CHECKING:
    from .model import DomainFacts
    from .report import Finding

# --- FIFO: ports closed or moved while LINKED on an offline CPU's queue ---------------------------------------------

bug("linux-close-linked-offline", "Linux", "A CPU taken offline without draining its queues: its ports closed or "
    "moved while still LINKED there",
    "Linux fcdf31a7c162 (\"xen/events/fifo: Handle linked events when closing a port\", 4.3, 2015): a dead CPU's "
    "queues drained without handling (the drop path), as is a linked port's close on an offline CPU",
    "the offlined CPU's ports, closed or moved to another CPU, stay LINKED on its queue: a moved port's every "
    "later event only sets PENDING in a word already LINKED there (the disk stalls after offlining a CPU); a "
    "closed one is busy, and Xen of the time handed it out again, with the same loss for the new channel")


@signature("linux-close-linked-offline")
def _left_on_down_queue(f: Finding, dom: DomainFacts) -> bool:
    # on a down vCPU's queue, a port the kernel closed (no status: known by its word alone, and not one of Xen's
    # own that EVTCHNOP_status refused) or moved to another vCPU: a CPU taken down with its ports closed and moved
    # but its queues not drained.  An event merely raised for a vCPU downed behind the kernel's back is on an
    # open port that still names that vCPU.
    if f.rule != "queued-on-down-vcpu":
        return False
    xens = set(dom.unreported or ())
    for port in f.ports:
        p = dom.ports.get(port)
        if port in xens:
            continue
        if p is None or p.state in ("closed", "unknown") or (p.vcpu is not None and p.vcpu != f.vcpu):
            return True
    return False
