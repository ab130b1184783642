"""``xenevt doctor``: rules that explain stuck event channels from whatever evidence there is.

Each rule reads the facts (never the source), stays silent where a fact it
needs is unknown, and says what it found: severity, domain, port(s), the
evidence, and one sentence on what it usually means and what to try.
``--since`` gives a second, earlier sample, so "stuck" can mean "still so".
Evidence that was not all read is never called healthy: what went unread may
be what is wrong, so the verdict is then "inconclusive" (exit 4) unless a
finding already says "problems" (exit 3).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .model import DomainFacts, Evidence

SEVERITIES = ("info", "warning", "error")
DEFAULT_DOMU_LIMIT = 1023          # Xen's default max_event_channels for a guest
DOM0_LIMIT = (1 << 17) - 1
EXIT_CODES = {"healthy": 0, "problems": 3, "inconclusive": 4}
SHOWN_IN_JSON = 20                 # the first unread items and warnings listed; the totals say how many more
BROKEN = {"range": "points past the event array (or at a page that is not there)",
          "unlinked": "points at a port that is not LINKED",
          "cycle": "comes back on itself (a cycle)",
          "shared": "runs into another queue's chain",
          "truncated": "is longer than the walk allows"}


@dataclass
class Finding:
    severity: str
    rule: str
    domain: int
    ports: list[int]
    title: str
    evidence: str
    advice: str
    vcpu: int | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    checked: dict[int, int] = field(default_factory=dict)  # domain -> ports examined
    warnings: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)        # what the evidence held but did not become facts

    @property
    def verdict(self) -> str:
        """problems (a warning or worse), else inconclusive (something went unread), else healthy."""
        if any(f.severity in ("warning", "error") for f in self.findings):
            return "problems"
        return "inconclusive" if self.unread else "healthy"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "healthy": self.verdict == "healthy",
                "findings": [f.as_dict() for f in self.findings],
                "checked": {str(d): n for d, n in self.checked.items()},
                "unread": self.unread[:SHOWN_IN_JSON], "unread_total": len(self.unread),
                "warnings": self.warnings[:SHOWN_IN_JSON], "warnings_total": len(self.warnings)}


def _queued(dom: DomainFacts) -> dict[int, tuple[int, int]]:
    """port -> (vcpu, priority) of the queue whose chain holds it."""
    out = {}
    for v in dom.vcpus.values():
        for q in v.queues:
            for port in q.chain:
                out.setdefault(port, (q.vcpu, q.priority))
    return out


def _walked(dom: DomainFacts) -> bool:
    return any(v.control_block for v in dom.vcpus.values())


def examine(ev: Evidence, since: Evidence | None = None) -> Report:
    rep = Report(warnings=list(ev.warnings),
                 unread=[str(u) for u in ev.unread if u.domain is None or u.domain in ev.domains])
    if not ev.domains:
        rep.unread.append(f"{ev.source}: no domain in the evidence")
    age = ev.taken_at - since.taken_at if since is not None else None
    for domid in sorted(ev.domains):
        dom = ev.domains[domid]
        prev = since.domains.get(domid) if since is not None else None
        rep.checked[domid] = len(dom.ports)
        _pending_masked(rep, dom, prev, age)
        _pending_unlinked(rep, dom, prev, age)
        _chains(rep, dom)
        _unreachable(rep, dom)
        _busy(rep, dom)
        _moved(rep, dom)
        _no_control_block(rep, dom)
        _remote_ends(rep, dom, ev)
        _limit(rep, dom)
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    rep.findings.sort(key=lambda f: (order[f.severity], f.domain, f.ports, f.rule))
    return rep


def _add(rep: Report, severity: str, rule: str, dom: DomainFacts, ports: list[int], title: str, evidence: str,
         advice: str, vcpu: int | None = None) -> None:
    rep.findings.append(Finding(severity, rule, dom.domain, ports, title, evidence, advice, vcpu))


def _pending_masked(rep, dom, prev, age):
    for p in sorted(dom.ports.values(), key=lambda f: f.port):
        if not (p.pending and p.masked) or p.state in ("closed", "reserved"):
            continue
        before = prev.ports.get(p.port) if prev is not None else None
        still = before is not None and before.pending and before.masked
        evidence = f"PENDING and MASKED ({p.state}{_remote(p)})"
        if still:
            evidence += f"; already so {age:.0f} s earlier"
        _add(rep, "error" if still else "warning", "pending-masked", dom, [p.port],
             f"port {p.port} is pending but masked" + (f" for at least {age:.0f} s" if still else ""), evidence,
             "The guest masked the port and has not unmasked it, so the event waits: a driver that stopped "
             "servicing it (check its row in the guest's /proc/interrupts) or a lost unmask; "
             f"`xenevt unmask {p.port}` shows whether events flow again.")


def _pending_unlinked(rep, dom, prev, age):
    for p in sorted(dom.ports.values(), key=lambda f: f.port):
        if not p.pending or p.masked is not False or p.state in ("closed", "reserved"):
            continue
        if p.linked is False:
            kind = "not LINKED on any queue"
        elif p.selector is False and dom.abi == "2-level":
            kind = "its word's selector bit is clear"
        else:
            continue
        before = prev.ports.get(p.port) if prev is not None else None
        still = before is not None and before.pending and before.masked is False and (
            before.linked is False or before.selector is False)
        _add(rep, "error", "pending-not-queued", dom, [p.port],
             f"port {p.port} is pending and unmasked but {kind}",
             f"PENDING set, MASKED clear, {kind}" + (f"; already so {age:.0f} s earlier" if still else
                                                      " (one sample: a guest mid-upcall can show this for "
                                                      "microseconds; confirm with --since)"),
             "An event that will never be delivered: Xen set PENDING but did not queue it (a lost link), so "
             "nothing wakes the guest for it; raising it again (a notify, or mask+unmask) requeues it. Report the "
             "Xen and guest kernel versions.")


def _chains(rep, dom):
    for v in sorted(dom.vcpus.values(), key=lambda x: x.vcpu):
        for q in v.queues:
            where = f"vCPU {q.vcpu} priority {q.priority}"
            chain = " -> ".join(map(str, q.chain)) or "(nothing)"
            if q.status in BROKEN:
                other = f" (vCPU {q.other_queue[0]} priority {q.other_queue[1]})" if q.other_queue else ""
                sev = "warning" if q.status == "truncated" else "error"
                _add(rep, sev, f"chain-{q.status}", dom, [q.bad_port] if q.bad_port else [],
                     f"queue {where}: the chain {BROKEN[q.status]}",
                     f"head {q.head}: {chain}, then port {q.bad_port}{other}",
                     "The guest walks this queue by LINK fields: a broken chain loses every event after the break "
                     "(Linux stops at it) or spins. It means the guest wrote the event array wrongly or memory "
                     "was corrupted; the domain needs its event channels reset (reboot or EVTCHNOP_reset).",
                     vcpu=q.vcpu)
            elif q.status == "empty" and q.ready:
                _add(rep, "error", "ready-without-head", dom, [], f"queue {where}: READY is set but the head is 0",
                     f"READY bit {q.priority} set, head[{q.priority}] = 0",
                     "Xen sets READY only when it writes a new head: a READY bit with no head means the control "
                     "block was written by someone else or the head was lost; the guest finds nothing to consume.",
                     vcpu=q.vcpu)
            elif q.chain and not q.ready and q.status == "end":
                _add(rep, "error", "head-without-ready", dom, [q.chain[0]],
                     f"queue {where} holds {len(q.chain)} event(s) but its READY bit is clear",
                     f"head {q.head}: {chain}; READY bit {q.priority} clear",
                     "Nothing will make the guest look at this queue until another event is linked as a new head "
                     "(which it will not be: the queue is not empty), so these events sit forever; a guest "
                     "mid-upcall shows this briefly. Unmasking or notifying does not help; EVTCHNOP_reset does.",
                     vcpu=q.vcpu)


def _unreachable(rep, dom):
    if not _walked(dom):
        return
    queued = _queued(dom)
    broken_after = {q.bad_port for v in dom.vcpus.values() for q in v.queues if q.status in BROKEN}
    for p in sorted(dom.ports.values(), key=lambda f: f.port):
        if p.linked and p.port not in queued and p.port not in broken_after:
            _add(rep, "error", "linked-unreachable", dom, [p.port],
                 f"port {p.port} is LINKED but no queue reaches it",
                 f"LINKED (LINK {p.link}), PENDING {p.pending}; not on the chain of any vCPU's queue",
                 "A lost link: the event is marked queued, so Xen will never link it again, but no head leads to "
                 "it, so the guest never consumes it; the port stays dead until the domain's event channels are "
                 "reset.")


def _busy(rep, dom):
    for p in sorted(dom.ports.values(), key=lambda f: f.port):
        if p.busy:
            _add(rep, "warning", "busy-left-set", dom, [p.port], f"port {p.port} has BUSY set",
                 f"BUSY set ({'LINKED' if p.linked else 'not LINKED'})",
                 "Xen sets BUSY only while it links an event after this word; left set, it means a link was "
                 "interrupted or the guest rewrote the word, and Xen's next link after it may give up "
                 "(an event lost).")


def _moved(rep, dom):
    queued = _queued(dom)
    for port, (vcpu, prio) in sorted(queued.items()):
        p = dom.ports.get(port)
        if p is None or p.priority is None and p.vcpu is None:
            continue
        moved = []
        if p.priority is not None and p.priority != prio:
            moved.append(f"priority {prio} -> {p.priority}")
        if p.vcpu is not None and p.vcpu != vcpu and p.state not in ("closed",):
            moved.append(f"vCPU {vcpu} -> {p.vcpu}")
        if moved:
            _add(rep, "info", "queued-elsewhere", dom, [port],
                 f"port {port} is queued on vCPU {vcpu} priority {prio}, but its channel now says otherwise",
                 ", ".join(moved),
                 "Normal right after set-priority or bind-vcpu: this event is delivered from its old queue and "
                 "later ones use the new one. If it stays so, the old queue is not being consumed.", vcpu=vcpu)


def _no_control_block(rep, dom):
    for p in sorted(dom.ports.values(), key=lambda f: f.port):
        if p.state in ("closed", "reserved", "unknown") or p.vcpu is None:
            continue
        v = dom.vcpus.get(p.vcpu)
        if v is not None and v.control_block is False:
            _add(rep, "error", "vcpu-without-control-block", dom, [p.port],
                 f"port {p.port} notifies vCPU {p.vcpu}, which has no control block",
                 f"{p.state}{_remote(p)}, notify vCPU {p.vcpu}; vCPU {p.vcpu} never registered a control block",
                 "Xen drops every event for a vCPU without a control block (a CPU that is offline or never "
                 "finished coming up); bind the port to an online vCPU (`xenevt bind-vcpu`) or bring the CPU up.",
                 vcpu=p.vcpu)


def _remote_ends(rep, dom, ev):
    for p in sorted(dom.ports.values(), key=lambda f: f.port):
        if p.state != "interdomain" or p.remote_domain is None or p.remote_port is None:
            continue
        rdom = ev.domains.get(p.remote_domain)
        if rdom is None or not rdom.ports and not rdom.vcpus:
            continue  # the other domain is not in the evidence: nothing to compare
        r = rdom.ports.get(p.remote_port)
        if r is None or r.state in ("closed", "unknown"):
            what = "is closed"
        elif r.state != "interdomain":
            what = f"is {r.state}" + (f" (waiting for domain {r.remote_domain})" if r.state == "unbound" else "")
        elif (r.remote_domain, r.remote_port) != (dom.domain, p.port):
            what = f"is connected to domain {r.remote_domain} port {r.remote_port} instead"
        else:
            continue
        _add(rep, "error", "remote-end-mismatch", dom, [p.port],
             f"port {p.port} is connected to domain {p.remote_domain} port {p.remote_port}, which {what}",
             f"local: interdomain -> {p.remote_domain}:{p.remote_port}; remote: {r.state if r else 'closed'}"
             + (f" -> {r.remote_domain}:{r.remote_port}" if r is not None and r.remote_port is not None else ""),
             "Notifications on this port go nowhere useful: the two ends disagree, which Xen itself never lets "
             "happen; the evidence is from different moments, or the peer's table is corrupt. Re-establish the "
             "channel (close and bind again).")


def _limit(rep, dom):
    used = sum(1 for p in dom.ports.values() if p.state not in ("closed", "reserved", "unknown"))
    if dom.max_ports is not None:
        limit, said = dom.max_ports - 1, f"limit {dom.max_ports - 1}"
    else:
        limit = DOM0_LIMIT if dom.domain == 0 else DEFAULT_DOMU_LIMIT
        said = f"assuming Xen's default limit of {limit} (max_event_channels)"
    if used >= limit:
        _add(rep, "error", "ports-exhausted", dom, [], f"domain {dom.domain} has no free event channel",
             f"{used} ports in use, {said}",
             "Every new bind in this domain fails (ENOSPC): raise max_event_channels in the domain's config, or "
             "find who leaks ports (the list shows them).")
    elif used >= 0.9 * limit:
        _add(rep, "warning", "ports-near-limit", dom, [], f"domain {dom.domain} is near its event-channel limit",
             f"{used} ports in use, {said}",
             "New devices or vCPUs will soon fail to bind (ENOSPC): raise max_event_channels or look for a leak.")


def _remote(p) -> str:
    if p.state == "interdomain" and p.remote_domain is not None:
        return f" to domain {p.remote_domain} port {p.remote_port}"
    if p.state == "unbound" and p.remote_domain is not None:
        return f" waiting for domain {p.remote_domain}"
    if p.state == "virq" and p.virq is not None:
        return f" VIRQ {p.virq}"
    return ""
