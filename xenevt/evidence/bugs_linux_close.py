"""Historical bugs of Linux's event-channel code around closing ports and CPU hotplug (drivers/xen/events/), and
their signatures (history.py).  Linux's lateeoi bugs are in bugs_linux.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .history import bug, signature

if TYPE_CHECKING:
    from .model import DomainFacts
    from .report import Finding

# --- FIFO: a port closed while LINKED on an offline CPU's queue --------------------------------------------------

bug("linux-close-linked-offline", "Linux", "ports closed while still LINKED on the queue of a CPU taken offline, "
    "its queues never drained",
    "Linux fcdf31a7c162 (\"xen/events/fifo: Handle linked events when closing a port\", 4.3, 2015): a dead CPU's "
    "queues drained without handling (the drop path), as is a linked port's close on an offline CPU",
    "the offlined CPU's closed ports stay LINKED on its queue (busy); Xen of the time handed such a port out "
    "again, so the new channel's events only set PENDING in a word already LINKED on the dead CPU's queue: "
    "every later event on it lost (the disk stalls after offlining a CPU)")


@signature("linux-close-linked-offline")
def _closed_on_down_queue(f: Finding, dom: DomainFacts) -> bool:
    # a closed port on a down vCPU's queue (no status: known by its word alone, and not one of Xen's own that
    # EVTCHNOP_status refused): the kernel closed a port of a CPU it had taken down without draining that
    # CPU's queues (an event merely raised for a down vCPU behind the kernel's back is on an open port)
    if f.rule != "queued-on-down-vcpu":
        return False
    xens = set(dom.unreported or ())
    return any(port not in xens and (p is None or p.state in ("closed", "unknown"))
               for port, p in ((port, dom.ports.get(port)) for port in f.ports))
