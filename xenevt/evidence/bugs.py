"""The catalogue of historical event-channel bugs (history.py's ``BUGS``) and their signatures, one block a bug:
Xen's FIFO code here, Xen's other event-channel code in bugs_xen.py, Linux's in bugs_linux.py.

Each entry's facts come from its fixing commit or advisory: the order of operations it changed and what that
order left in the event words, queues and counters.  The replays that bring each back are in xenevt/replay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .history import bug, signature

if TYPE_CHECKING:
    from .model import DomainFacts, PortFacts, VcpuFacts
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


bug("xen-old-tail-linked", "Xen", "A port moved to another vCPU or priority stays its old queue's tail",
    "Xen e33d4257fc (\"evtchn/fifo: don't corrupt queues if an old tail is linked\", 4.4, 2014)",
    "the next event on the old queue is linked after the moved port (now LINKED on its new queue) instead of "
    "becoming a new HEAD: it joins the other vCPU's queue, and the next link there overwrites its LINK, so it "
    "stays LINKED and PENDING, reachable from no head")


def _on_its_queue(f: Finding, dom: DomainFacts, rule: str) -> tuple[PortFacts, VcpuFacts, int] | None:
    """(the finding's first port, its vCPU's facts, its queue's head in that vCPU's control block), where ``f`` is
    ``rule``'s finding and all three are known; else None."""
    if f.rule != rule or not f.ports:
        return None
    p = dom.ports.get(f.ports[0])
    if p is None or p.vcpu is None or p.priority is None:
        return None
    v = dom.vcpus.get(p.vcpu)
    if v is None or not v.heads or not 0 <= p.priority < len(v.heads):
        return None
    return p, v, v.heads[p.priority]


@signature("xen-old-tail-linked")
def _linked_after_moved_tail(f: Finding, dom: DomainFacts) -> bool:
    # a lost link, on the queue whose control-block head is a port that has since moved to another vCPU or
    # priority: that moved port was the old tail the lost event was linked after
    got = _on_its_queue(f, dom, "linked-unreachable")
    if got is None:
        return False
    lost, _, first = got
    head = dom.ports.get(first)
    return head is not None and head.port != lost.port and head.vcpu is not None \
        and (head.vcpu, head.priority) != (lost.vcpu, lost.priority)


bug("xen-pending-unqueued", "Xen", "PENDING set on an event Xen then drops: its vCPU has no control block (or its "
    "queues could not be locked)",
    "Xen 8aa0e9d2d1 (\"evtchn/fifo: Don't set PENDING bit if guest misbehaves\", 4.17, 2022)",
    "an event raised for a vCPU that has not registered its control block yet is dropped unqueued but left "
    "PENDING: once the vCPU comes up the port is pending and unmasked yet on no queue, and Xen's next event there "
    "finds it already pending (no wake for the pollers)")


@signature("xen-pending-unqueued")
def _pending_never_linked(f: Finding, dom: DomainFacts) -> bool:
    # pending and unqueued on a queue Xen never linked anything to (its control-block head still the 0 the
    # guest registered it with), and where counted, no event raised to the guest nor delivered on this binding:
    # PENDING came from a raise Xen dropped (the simulator counts no drop for want of a control block)
    got = _on_its_queue(f, dom, "pending-not-queued") if dom.abi == "FIFO" else None
    if got is None:
        return False
    p, v, head = got
    assert p.priority is not None  # (_on_its_queue)
    if not v.control_block or head != 0 or (v.ready or 0) >> p.priority & 1:
        return False
    c = next((c for c in dom.counters if c.port == p.port), None)
    return c is None or not (c.raised or c.handled)


bug("xen-no-page-dropped", "Xen", "An event for a port without an event-array page dropped",
    "Xen 917c123029 (\"evtchn: don't lose pending state if FIFO event array page is missing\", 4.4, 2013)",
    "a port bound before the guest added the array page covering it (the toolstack's, or one just bound) loses "
    "an event raised in between: once the page is there the port is idle, unmasked, nothing pending, the event "
    "counted raised and never delivered")


@signature("xen-no-page-dropped")
def _raised_before_page(f: Finding, dom: DomainFacts) -> bool:
    # every event raised on the port vanished, and nothing was ever linked on its queue since the control block
    # was registered (its head still 0): the events never reached a word, unlike ones a guest consumed and lost
    got = _on_its_queue(f, dom, "raised-not-delivered") if dom.abi == "FIFO" else None
    return got is not None and bool(got[1].control_block) and got[2] == 0


from . import bugs_linux, bugs_linux_close, bugs_minios, bugs_xen  # noqa: E402,F401  (their entries, after these)
