"""Rules that need two samples: rates from activity counters (a storm, spurious events and delayed EOIs
growing: the XSA-332/XSA-391 class of rogue peer) and a port still pending with nothing delivered.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress
from operator import attrgetter, ne

from ..model import CounterFacts, DomainFacts
from .common import delta, remote, secs, unseen
from .registry import Needs, Rule, Subject, check

STUCK_AFTER = 10.0                 # seconds a port may stay pending across samples before it is called stuck
SPURIOUS_MIN = 10                  # spurious events between samples (and 1/s) before they are a finding
_KEY, _COUNTS = attrgetter("key"), attrgetter("raised", "handled", "spurious", "eoi_delayed")


@check(Rule("pending-stuck", ("warning",), "A port pending, unmasked, in both samples at least --stuck-after "
            "apart with nothing delivered in between: the guest is not taking its event."),
       needs=Needs.TWO_SAMPLES)
def pending_stuck(s: Subject) -> None:
    """A port pending in both samples, with nothing delivered on it in between (where that is counted), that the
    masked and never-queued rules do not already explain: its event waits and the guest does not take it."""
    ordered, dom, prev, age = s.ordered, s.dom, s.prev, s.age
    assert prev is not None and age is not None  # (Needs.TWO_SAMPLES)
    if age < s.stuck_after:
        return
    handled = s.counters
    before = s.counters_before
    for p in ordered:
        if not p.pending or p.masked is not False or p.state in ("closed", "reserved", "unknown"):
            continue
        if p.linked is False or dom.abi == "2-level" and unseen(dom, p):
            continue  # pending-not-queued says it
        was = prev.ports.get(p.port)
        if was is None or not was.pending or was.state != p.state:
            continue
        now, then = handled.get(p.port), before.get(p.port)
        if now is not None and then is not None and now.handled is not None and then.handled is not None:
            if now.handled != then.handled:
                continue  # events were delivered in between: a busy port, not a stuck one
            counted = "; no event delivered on it in between"
        else:
            counted = "; whether events were delivered in between is not counted by this source"
        s.add("warning", "pending-stuck", [p.port],
              f"port {p.port} has been pending for at least {age:.0f} s",
              f"PENDING, unmasked, {p.state}{remote(p)} in both samples, {age:.0f} s apart{counted}",
              "The event is queued for the guest but the guest is not taking it: the vCPU it notifies "
              f"(vCPU {p.vcpu}) may be blocked with events off, offline, or its upcall handler stuck. Look at the "
              "guest's console and `xenevt dump -d " + str(dom.domain) + "`; a notify on the port does not help.",
              vcpu=p.vcpu)


@check(Rule("event-storm", ("warning",), "A port, IRQ or xenbus device raising more than --storm-rate events/s."),
       Rule("spurious-events", ("warning",), "A xenbus device's spurious_events growing (10 or more, 1/s): the "
            "other end notifies with no work (XSA-391)."),
       Rule("eoi-delayed", ("warning",), "A xenbus device's jiffies_eoi_delayed growing: Linux throttles a "
            "flooding peer (lateeoi)."),
       needs=Needs.TWO_SAMPLES)
def storms(s: Subject) -> None:
    """Rates from two samples of the domain's counters: a storm, spurious events growing, EOIs delayed."""
    dom, prev, age, storm_rate = s.dom, s.prev, s.age, s.storm_rate
    assert prev is not None and age is not None  # (Needs.TWO_SAMPLES)
    old = dict(zip(map(_KEY, prev.counters), prev.counters, strict=True))
    counters: Iterable[CounterFacts] = dom.counters
    if storm_rate > 0:  # a counter with nothing counted since has no rate: only the others looked at (C loops)
        then = dict(zip(map(_KEY, prev.counters), map(_COUNTS, prev.counters), strict=True))
        counters = compress(counters, map(ne, map(_COUNTS, counters), map(then.get, map(_KEY, counters))))
    for c in counters:
        o = old.get(c.key)
        if o is None:
            continue
        label, ports = counter_label(dom, c)
        events = max(delta(c.raised, o.raised), delta(c.handled, o.handled))
        rate = events / age
        if rate >= storm_rate:
            sender = ""
            p = dom.ports.get(c.port) if c.port is not None else None
            if p is not None and p.state == "interdomain":
                sender = f"; the sender is domain {p.remote_domain} (its port {p.remote_port})"
            s.add("warning", "event-storm", ports,
                  f"{label} receives {rate:,.0f} events/s: an event storm",
                  f"{events:,} events in {secs(age)} s (threshold {storm_rate:,.0f}/s, --storm-rate){sender}",
                  "A peer notifying in a loop (the XSA-332/XSA-391 class) costs this domain an upcall per event. A "
                  "guest's frontend doing it is misbehaving or hostile: Linux throttles it (watch its xenbus "
                  "spurious_events and jiffies_eoi_delayed); pause or destroy that guest, or close the channel. If "
                  "the device is just this busy, raise --storm-rate.")
        spurious = delta(c.spurious, o.spurious)
        if spurious >= SPURIOUS_MIN and spurious / age >= 1:
            s.add("warning", "spurious-events", ports,
                  f"{label}: {spurious:,} spurious events in {secs(age)} s",
                  f"xenbus spurious_events {o.spurious} -> {c.spurious} ({spurious / age:,.1f}/s)",
                  "Events that needed no action: the other end notifies without putting work on the ring, a rogue or "
                  "buggy frontend/backend (XSA-391). Linux holds the EOI of such a device back once more than its "
                  "spurious_threshold of them come in a row (lateeoi); find the "
                  "other end's domain in the device's xenstore node and check that guest.")
        delayed = delta(c.eoi_delayed, o.eoi_delayed)
        if delayed > 0:
            s.add("warning", "eoi-delayed", ports,
                  f"{label}: Linux held its EOI back for {delayed:,} jiffies in {secs(age)} s",
                  f"xenbus jiffies_eoi_delayed {o.eoi_delayed} -> {c.eoi_delayed}",
                  "Linux throttles a device whose events keep finding no work (lateeoi): the other end is flooding "
                  "it, and the device slows down for everyone. The first sign of a rogue peer: find which domain is "
                  "on the other end (the device's xenstore node) and stop it.")


def counter_label(dom: DomainFacts, c: CounterFacts) -> tuple[str, list[int]]:
    if c.port is not None:  # a port's own counter, or an IRQ row tied to its port (netback's vif queues)
        return (f"port {c.port}" if c.key == f"port {c.port}" else f"port {c.port} ({c.key} {c.name})"), [c.port]
    return f"{c.key} ({c.name})" if c.name and c.name != c.key else c.key, []


