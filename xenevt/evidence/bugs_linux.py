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
