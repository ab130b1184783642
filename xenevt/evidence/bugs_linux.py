"""Historical bugs of Linux's event-channel code (drivers/xen/events/, drivers/xen/evtchn.c), and their signatures
(history.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .history import bug, signature

if TYPE_CHECKING:
    from .model import DomainFacts
    from .report import Finding

# --- Linux: drivers/xen/events/events_base.c --------------------------------------------------------------------

bug("linux-unmask-despite-eoi", "Linux", "An event channel unmasked by the irq core while its lateeoi EOI is "
    "still pending", "Linux 25da4618af24 (\"xen/events: don't unmask an event channel when an eoi is pending\", "
    "5.12, 2021: mask reasons, explicit, temporary and EOI-pending, each cleared alone)",
    "a device port throttled by a delayed EOI is unmasked early (a driver's enable_irq, the irq core's unmask); "
    "the peer's next event arrives while the handler is still active, is ignored and left pending, and the EOI's "
    "unmask finds nothing to raise: pending, unmasked, on no queue, the device stalled")


@signature("linux-unmask-despite-eoi")
def _lost_behind_an_early_unmask(f: Finding, dom: DomainFacts) -> bool:
    # an event left unqueued on an interdomain port of a domain whose kernel is holding PV devices' EOIs back:
    # Xen's lost links leave no delayed EOI behind them
    p = dom.ports.get(f.ports[0]) if f.ports else None
    return (f.rule == "pending-not-queued" and p is not None and p.state == "interdomain"
            and any(c.key.startswith("xenbus ") and (c.eoi_delayed or 0) > 0 for c in dom.counters))


# --- Linux: drivers/xen/events/events_base.c and the PV drivers: lateeoi ----------------------------------------

bug("linux-flood-no-lateeoi", "Linux", "A PV device's event channel bound without lateeoi: a peer notifying in a "
    "loop costs the victim an upcall for each event",
    "Linux XSA-332 (2020): 54c9de89895e (\"xen/events: add a new \"late EOI\" evtchn framework\"), 23025393dbeb "
    "(\"xen/netback: use lateeoi irq binding\"), 01263a1fabe3 (\"xen/blkback: use lateeoi irq binding\"), "
    "5f7f77400ab5 (\"xen/events: block rogue events for some time\"), e99502f76271 (\"xen/events: defer eoi in "
    "case of excessive number of events\"); XSA-391 (2021): b27d47950e48 "
    "(\"xen/netfront: harden netfront against event channel storms\"), 0fd08a34e8e3 (\"xen/blkfront: harden "
    "blkfront against event channel storms\"); the counters: 06f45fe96fcd (\"xen/events: add per-xenbus device "
    "event statistics and settings\", 5.12)",
    "a rogue frontend (or backend) notifies with nothing on the ring; the victim's kernel acks, handles and "
    "unmasks each event at once, so every notify that finds the port idle is another upcall (a denial of service), "
    "with no spurious count, no delayed EOI, no xenbus counters: the port's deliveries keep pace with Xen's raises")


@signature("linux-flood-no-lateeoi")
def _every_flooded_event_handled(f: Finding, dom: DomainFacts) -> bool:
    # a storm on an interdomain channel whose kernel took at least a tenth of the events Xen raised on it (an upcall
    # for each it could take; a lateeoi kernel holds a flood behind the mask and takes two events a jiffy at most,
    # a few hundred a second, under 5% of a storm's 10,000), in a domain whose kernel keeps no xenbus device
    # counters (a busy device on a kernel since 5.12 takes its events as fast, but counts them there); where the
    # raises are not counted (a real kernel's /proc/interrupts) nothing says the storm was taken event by event
    p = dom.ports.get(f.ports[0]) if f.rule == "event-storm" and f.ports else None
    if p is None or p.state != "interdomain" or any(c.key.startswith("xenbus ") for c in dom.counters):
        return False
    own = next((c for c in dom.counters if c.key == f"port {p.port}"), None)
    return (own is not None and own.raised is not None and own.handled is not None and own.raised > 0
            and own.handled * 10 >= own.raised)


# --- Linux: drivers/xen/events (2-level): cpu_evtchn_mask ---------------------------------------------------------

bug("linux-l2-port-on-no-cpu", "Linux", "Linux's 2-level cpu_evtchn_mask set up for the first 64 ports only: a "
    "port past them, bound with no explicit affinity, is on no CPU",
    "Linux b0097adeec27 (\"xen: ensure that all event channels start off bound to VCPU 0\", 2009: the mask "
    "initialised by the size of the whole structure, not of a pointer)",
    "an upcall takes the selector bit of the port's word and finds no port of its CPU there: the port stays "
    "pending and unmasked under a cleared selector bit, and Xen, finding it pending already, never sets the bit "
    "again; the channel is dead until another port of the same word is raised on that vCPU")


@signature("linux-l2-port-on-no-cpu")
def _unseen_past_first_word(f: Finding, dom: DomainFacts) -> bool:
    # 2-level, an interdomain port (bound with no explicit affinity) past the first selector word, pending and
    # unmasked with its word's selector bit clear on vCPU 0 (every port starts there): the upcall skipped it, as
    # one whose cpu_evtchn_mask had it on no CPU did; a lateeoi-throttled device's early unmask is another bug
    p = dom.ports.get(f.ports[0]) if f.ports else None
    return (f.rule == "pending-not-queued" and dom.abi == "2-level" and p is not None and p.port >= 64
            and p.state == "interdomain" and p.vcpu == 0
            and not any(c.key.startswith("xenbus ") and (c.eoi_delayed or 0) > 0 for c in dom.counters))


bug("linux-l2-unmask-on-own-vcpu", "Linux", "Linux's 2-level unmask resent a pending port on the vCPU it ran on, "
    "whichever vCPU the port was bound to",
    "Xen 3e61615263 (\"Fix unmask_evtchn() when the port is bound to a different VCPU\", 2005: the sparse Linux "
    "tree's unmask makes the new EVTCHNOP_unmask for another vCPU's port, and Xen raises it on the port's vCPU)",
    "the selector bit and upcall flag land on the unmasking vCPU, whose upcall finds no port of its own under "
    "them; the port's own vCPU is never told: pending and unmasked under a clear selector bit, and Xen, finding it "
    "pending, never sets one again (nothing in the event state tells this from another lost selector write)")
