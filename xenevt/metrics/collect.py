"""One collection: a doctor round over the whole host (its evidence is every fact the metrics need) turned into
Prometheus metric families.

Everything comes from one ``Host.doctor`` call: the ports of every domain with their state and event-word
flags, each vCPU's READY bits and control block, the limits, the event counters (the simulator's per port,
/proc/interrupts' per IRQ, the xenbus devices'), the ports' names and the findings, the previous round's sample
giving the rules their rates.  Per-port series are bounded: the ports something names (a device's, xenstore's,
a console's: a few per guest) and the ``top`` busiest others.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from itertools import compress, repeat
from operator import attrgetter, is_not, ne
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from .. import Diagnosis, Host

PREFIX = "xenevt"
PORT_STATES = ("unbound", "interdomain", "virq", "ipi", "pirq")
SEVERITIES = ("info", "warning", "error")


@dataclass
class Round:
    """What one collection produced: the families to serve, the diagnosis (the next round's ``since``), and
    what failed."""

    families: list[Metric]
    diagnosis: Diagnosis | None
    seconds: float
    failed: dict[str, str] = field(default_factory=dict)  # source -> why
    error: Exception | None = None  # the evidence's own error, where it failed (a one-shot run raises it)


def collect(host: Host, previous: Diagnosis | None = None, *, ports: str = "named", top: int = 10,
            storm_rate: float | None = None, domains: tuple[int, ...] = ()) -> Round:
    """One round over ``host`` (refreshed first: a simulated host is read as a new consistent copy), over every
    domain or ``domains``.  ``ports``: which ports get per-port event series, "named", "all" or "none" (plus the
    ``top`` busiest others since the previous round)."""
    from .. import XenevtError

    t0 = time.monotonic()
    host.refresh()
    failed: dict[str, str] = {}
    try:
        diagnosis = host.doctor(since=previous, storm_rate=storm_rate, domains=domains)
    except XenevtError as e:
        failed["evidence"] = str(e)
        return Round(_health(failed, time.monotonic() - t0, 0), None, time.monotonic() - t0, failed, e)
    families = _families(diagnosis, previous, ports, top, failed)
    seconds = time.monotonic() - t0
    families += _health(failed, seconds, len(diagnosis.unread))
    return Round(families, diagnosis, seconds, failed)


def _gauge(name: str, doc: str, labels: tuple[str, ...]) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))


def _counter(name: str, doc: str, labels: tuple[str, ...]) -> Any:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))


def _families(dg: Diagnosis, previous: Diagnosis | None, which: str, top: int, failed: dict[str, str]) -> list:
    ev = dg.evidence
    names = dg.names
    if names is not None and any(n.startswith("no xenstore names") for n in names.notes):
        failed["names"] = next(n for n in names.notes if n.startswith("no xenstore names"))
    D = ("domain",)
    info = _gauge("domain_info", "A domain the host lists, with its event-channel ABI (1 per domain).",
                  ("domain", "abi"))
    ports = _gauge("ports", "Open event channels by state.", ("domain", "state"))
    limit = _gauge("port_limit", "The domain's event-channel limit (ports 0 to limit-1 may be bound).", D)
    pending = _gauge("ports_pending", "Ports whose event is pending.", D)
    pend_masked = _gauge("ports_pending_masked", "Ports pending and masked: their event waits for an unmask.", D)
    linked = _gauge("ports_linked", "FIFO: ports LINKED on a queue (events queued, not yet consumed).", D)
    ready = _gauge("vcpu_ready_queues", "FIFO: the vCPU's control block's READY bits set (queues with events).",
                   ("domain", "vcpu"))
    block = _gauge("vcpu_control_block", "FIFO: 1 where the vCPU registered a control block, 0 where it did not.",
                   ("domain", "vcpu"))
    dying = _gauge("domain_dying", "1 for a domain the hypervisor lists as dying (destroyed, not yet gone).", D)
    events = _counter("domain_events", "Events the domain's kernel handled (deliveries, Xen interrupts).", D)
    raised = _counter("domain_events_raised", "Events Xen raised on the domain's ports (where the source counts "
                      "raises: the simulator).", D)
    row_events = _counter("port_events", "Events handled per port or Xen IRQ (named ports and the busiest).",
                          ("domain", "port", "irq", "device"))
    row_raised = _counter("port_events_raised", "Events Xen raised per port (the simulator), as port_events.",
                          ("domain", "port", "irq", "device"))
    spurious = _counter("xenbus_spurious_events", "A xenbus device's spurious events (no work found).",
                        ("domain", "device"))
    eoi = _counter("xenbus_eoi_delayed_jiffies", "Jiffies a xenbus device's EOIs were held back (Linux's "
                   "lateeoi throttling a peer).", ("domain", "device"))
    old = previous.evidence.domains if previous is not None else {}
    named = _named_ports(names) if which == "named" else {}
    for d, dom in sorted(ev.domains.items()):
        dl = str(d)
        info.add_metric([dl, dom.abi or "unknown"], 1)
        # (each column counted by C loops, map and compress: a host's 40,000 ports)
        facts = dom.ports.values()
        by_state = Counter(map(_STATE, facts))
        for state in PORT_STATES:
            ports.add_metric([dl, state], by_state.get(state, 0))
        if dom.max_ports is not None:
            limit.add_metric([dl], dom.max_ports)
        waiting = list(compress(facts, map(_PENDING, facts)))
        pending.add_metric([dl], len(waiting))
        pend_masked.add_metric([dl], sum(map(bool, map(_MASKED, waiting))))
        if dom.abi == "FIFO":
            linked.add_metric([dl], sum(map(bool, map(_LINKED, facts))))
        for v, vf in sorted(dom.vcpus.items()):
            if vf.control_block is not None:
                block.add_metric([dl, str(v)], int(vf.control_block))
            if vf.ready is not None:
                ready.add_metric([dl, str(v)], bin(vf.ready).count("1"))
        if dom.dying is not None:
            dying.add_metric([dl], int(dom.dying))
        counters = dom.counters
        xenbus = list(map(str.startswith, map(_KEY, counters), repeat("xenbus ")))
        rows = [c for c, x in zip(counters, xenbus, strict=True) if not x] if any(xenbus) else counters
        handled = list(filter(_KNOWN, map(_HANDLED, rows)))
        if handled:
            events.add_metric([dl], sum(handled))
        raises = list(filter(_KNOWN, map(_RAISED, counters)))
        if raises:
            raised.add_metric([dl], sum(raises))
        for c in _rows(rows, old[d].counters if d in old else None, named.get(d, set()), which, top):
            device = _device(names, d, c.port)
            labels = [dl, "" if c.port is None else str(c.port), c.key[4:] if c.key.startswith("irq ") else "",
                      device]
            if c.handled is not None:
                row_events.add_metric(labels, c.handled)
            if c.raised is not None:
                row_raised.add_metric(labels, c.raised)
        for c in compress(counters, xenbus):
            node = c.key[len("xenbus "):]
            if c.spurious is not None:
                spurious.add_metric([dl, node], c.spurious)
            if c.eoi_delayed is not None:
                eoi.add_metric([dl, node], c.eoi_delayed)
    findings = _gauge("findings", "doctor's findings by domain, rule and severity (only those found).",
                      ("domain", "rule", "severity"))
    count: dict[tuple[str, str, str], int] = {}
    for f in dg.findings:
        key = (str(f.domain), f.rule, f.severity)
        count[key] = count.get(key, 0) + 1
    for key, n in sorted(count.items()):
        findings.add_metric(list(key), n)
    verdict = _gauge("doctor_verdict", "doctor's verdict over the host: 1 for the one that holds.", ("verdict",))
    for word in ("healthy", "problems", "inconclusive"):
        verdict.add_metric([word], int(dg.verdict == word))
    return [info, ports, limit, pending, pend_masked, linked, ready, block, dying, events, raised, row_events,
            row_raised, spurious, eoi, findings, verdict]


def _rows(rows: list, before: list | None, named: set[int], which: str, top: int) -> list:
    """The port and IRQ rows (not xenbus') that get their own series: those of a ``named`` port ("named"), every
    one ("all") or none, and the ``top`` busiest of the others since the previous round (``before``: its
    counters; none: nothing moved)."""
    if which == "all":
        return rows
    keep = [c for c in rows if c.port in named] if named else []
    if top <= 0 or before is None:
        return keep
    # the rows whose counts changed since the previous round, found by C loops (a quiet host's 40,000 rows
    # compared as tuples); only they can have moved, and only they are ranked
    then = dict(zip(map(_KEY, before), map(_COUNTS, before), strict=True))
    changed = compress(rows, map(ne, map(_COUNTS, rows), map(then.get, map(_KEY, rows))))
    kept = {c.key for c in keep}

    def moved(c) -> int:
        h, r = then[c.key]
        return max(c.handled or 0, c.raised or 0) - max(h or 0, r or 0)

    busy = [c for c in changed if c.key in then and c.key not in kept and moved(c) > 0]
    busy.sort(key=moved, reverse=True)  # (stable: equal rates in the rows' order)
    return keep + busy[:top]


def _named_ports(names) -> dict[int, set[int]]:
    """Per domain, the ports something names (each has a device name: Name.text is never empty)."""
    out: dict[int, set[int]] = {}
    if names is not None:
        for d, p in names.names:
            out.setdefault(d, set()).add(p)
    return out


_STATE, _PENDING, _MASKED, _LINKED = (attrgetter(f) for f in ("state", "pending", "masked", "linked"))
_KEY, _HANDLED, _RAISED = attrgetter("key"), attrgetter("handled"), attrgetter("raised")
_COUNTS = attrgetter("handled", "raised")
_KNOWN = partial(is_not, None)


def _device(names, domain: int, port: int | None) -> str:
    """The port's device name where something names it ("vif 0 queue 0 tx", "console"), else ""."""
    if names is None or port is None:
        return ""
    return names.text(domain, port)


def _health(failed: dict[str, str], seconds: float, unread: int) -> list:
    ok = _gauge("collect_success", "1 where the source was read in the last collection, 0 where it failed.",
                ("source",))
    for source in ("evidence", "names"):
        ok.add_metric([source], 0 if source in failed else 1)
    took = _gauge("collect_duration_seconds", "Seconds the last collection took.", ())
    took.add_metric([], round(seconds, 6))
    left = _gauge("evidence_unread", "Items of evidence the last collection could not read (doctor's unread).", ())
    left.add_metric([], unread)
    return [ok, took, left]
