"""What several families of rules say the same way: a port's other end, where a 2-level guest will look,
events counted between two samples."""

from __future__ import annotations

from ..model import DomainFacts, PortFacts
from .registry import Subject


def remote(p: PortFacts) -> str:
    if p.state == "interdomain" and p.remote_domain is not None:
        return f" to d{p.remote_domain}:{p.remote_port}"
    if p.state == "unbound" and p.remote_domain is not None:
        return f" waiting for domain {p.remote_domain}"
    if p.state == "virq" and p.virq is not None:
        return f" VIRQ {p.virq}"
    return ""


def unseen(dom: DomainFacts, p: PortFacts) -> str:
    """2-level: why a pending, unmasked port is not where the guest's upcall will look, or ""."""
    if p.selector is False:
        on = f" on vCPU {p.vcpu}" if p.vcpu is not None else ""
        return f"the selector bit of its word ({p.port // 64}) is clear{on}"
    v = dom.vcpus.get(p.vcpu) if p.selector and p.vcpu is not None else None
    if v is not None and v.upcall_pending is False:
        return f"vCPU {p.vcpu}'s evtchn_upcall_pending is clear (its selector bit {p.port // 64} is set)"
    return ""


def secs(age: float) -> str:
    return f"{age:.0f}" if age >= 10 else f"{age:.2g}"


def delta(now: int | None, then: int | None) -> int:
    """Counted since the earlier sample; a counter that went back (restarted) counts nothing."""
    return max(now - then, 0) if now is not None and then is not None else 0


def delivered(s: Subject, port: int) -> int | None:
    """Events handled on ``port`` between the two samples, where its counter is known in both (else None)."""
    if s.prev is None:
        return None
    now, then = s.counters.get(port), s.counters_before.get(port)
    if now is None or then is None or now.handled is None or then.handled is None:
        return None
    return delta(now.handled, then.handled)
