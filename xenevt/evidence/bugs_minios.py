"""Historical bugs of Mini-OS's event-channel code (Xen's tree, extras/mini-os: the stub domains' kernel), and their
signatures (history.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .history import bug, signature

if TYPE_CHECKING:
    from .model import DomainFacts
    from .report import Finding

bug("minios-bind-clears-pending", "Xen", "Mini-OS cleared a new interdomain port's pending bit after binding it",
    "Xen b9d1950675 (\"minios: Fix lost events\", 2008: binding leaves the port masked and pending; the caller "
    "unmasks once its handler is ready)",
    "an event the peer sent as soon as the channel was connected (the one Xen raises at the bind, and any sent "
    "before Mini-OS's clear) is thrown away: the port idle and unmasked afterwards, counted raised, never "
    "delivered, the peer waiting for an answer")


@signature("minios-bind-clears-pending")
def _cleared_at_bind(f: Finding, dom: DomainFacts) -> bool:
    # every event raised on a 2-level interdomain port vanished: on 2-level Xen always has a pending bit to set
    # (no page to miss, unlike FIFO's lost events), so only the guest clearing it unhandled loses them
    p = dom.ports.get(f.ports[0]) if f.ports else None
    return f.rule == "raised-not-delivered" and dom.abi == "2-level" and p is not None \
        and p.state == "interdomain"
