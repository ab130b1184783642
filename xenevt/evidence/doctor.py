"""``xenevt doctor``: rules that explain stuck event channels from whatever evidence there is.

Each rule reads the facts (never the source), stays silent where a fact it
needs is unknown, and says what it found: severity, domain, port(s), the
evidence, and one sentence on what it usually means and what to try.
``--since`` gives a second, earlier sample, so "stuck" can mean "still so".
Evidence that was not all read is never called healthy: what went unread may
be what is wrong, so the verdict is then "inconclusive" (exit 4) unless a
finding already says "problems" (exit 3).

2-level domains have no queues: their rules read each port's pending and
mask bits and each vCPU's vcpu_info (upcall flag, selector words).

With two samples, activity counters give rates: a port (or IRQ, or xenbus
device) raising faster than ``storm_rate`` is a storm, spurious events and
delayed EOIs growing mark a rogue peer (the XSA-332/XSA-391 class), and a
port still pending ``stuck_after`` seconds later with nothing delivered is
stuck.  Peers are judged against the domains the hypervisor lists: a port
connected to or waiting for a domain that is dying or gone is a dead peer.

One file (over 400 lines) because the rules share one pass: the queues are
judged live or stale once and the chains walked live-first, and every chain
rule reads that same walk; split, each module would redo or pass it around.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from operator import attrgetter

from .. import abi
from ..activity import STORM_RATE
from ..xenver import XEN_OWNED_STATUS_HIDDEN, behaves
from .model import CounterFacts, DomainFacts, Evidence, QueueFacts, VcpuFacts

SEVERITIES = ("info", "warning", "error")
EXIT_CODES = {"healthy": 0, "problems": 3, "inconclusive": 4}
STUCK_AFTER = 10.0                 # seconds a port may stay pending across samples before it is called stuck
SPURIOUS_MIN = 10                  # spurious events between samples (and 1/s) before they are a finding
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
    confirm: bool = False  # one sample cannot tell this from a transient state: take a second (--since)

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
        """problems (a warning or worse), else inconclusive (something went unread, or a finding needs a
        second sample to be told from a transient state), else healthy."""
        if any(f.severity in ("warning", "error") for f in self.findings):
            return "problems"
        return "inconclusive" if self.unread or self.to_confirm else "healthy"

    @property
    def to_confirm(self) -> int:
        return sum(1 for f in self.findings if f.confirm)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "healthy": self.verdict == "healthy",
                "findings": [f.as_dict() for f in self.findings],
                "checked": {str(d): n for d, n in self.checked.items()},
                "unread": self.unread[:SHOWN_IN_JSON], "unread_total": len(self.unread),
                "need_second_sample": self.to_confirm,
                "warnings": self.warnings[:SHOWN_IN_JSON], "warnings_total": len(self.warnings)}


def _walked(dom: DomainFacts) -> bool:
    return any(v.control_block for v in dom.vcpus.values())


@dataclass
class _Queue:
    """One queue as doctor judges it: live or stale, and its chain walked with the live queues first."""

    facts: QueueFacts
    live: str                  # why the queue is live ("" when it is not): READY, or the guest consuming it
    guest_known: bool          # the guest's local READY and heads are in the evidence
    chain: list[int] = field(default_factory=list)   # the ports this walk reached first
    status: str = "end"
    bad_port: int | None = None
    other: tuple[int, int] | None = None

    @property
    def where(self) -> str:
        return f"vCPU {self.facts.vcpu} priority {self.facts.priority}"


class _Queues:
    """A domain's queues judged live or stale, and their chains re-walked live queues first.

    Xen writes a queue's head only when it links into an empty queue, and Linux never clears it: after a
    drain the control block's head is stale and may point at a port now LINKED on another queue.  Linux
    takes READY with xchg at the start of an upcall and consumes from its own local heads, so mid-upcall a
    queue with events has READY clear.  A queue is live when its READY bit is set or the guest's local
    READY/head says it is being consumed; the others are stale.  The dump's walker goes in (vCPU,
    priority) order, so a stale queue walked first claims a live queue's chain, and the live one is then
    "shared" with it: the chains are rebuilt from the walker's own segments with every live queue first,
    so a stale head that leads into a live chain is just that, and a live chain is whole again.
    """

    def __init__(self, dom: DomainFacts):
        vcpus = [v for v in sorted(dom.vcpus.values(), key=lambda x: x.vcpu) if v.control_block]
        self.guest_known = bool(vcpus) and all(v.guest_known for v in vcpus)
        self.queues: list[_Queue] = []
        for v in vcpus:
            for q in v.queues:
                self.queues.append(_Queue(q, _live(v, q), v.guest_known))
        # the walker's segments: port -> next port, None at a chain's end, or (status, bad port) where it broke
        nxt: dict[int, object] = {}
        for qu in self.queues:
            q = qu.facts
            for i, port in enumerate(q.chain):
                if port in nxt:
                    continue  # a port in two segments (only a hand-made snapshot has that): the first one counts
                if i + 1 < len(q.chain):
                    nxt[port] = q.chain[i + 1]
                elif q.status == "end":
                    nxt[port] = None
                elif q.status in ("shared", "cycle") and q.bad_port is not None:
                    nxt[port] = q.bad_port  # a port some walk already took: the chain goes on there
                else:
                    nxt[port] = (q.status, q.bad_port)
        self.owner: dict[int, _Queue] = {}
        # live queues first; then, of two stale heads naming the same port, first the one on the queue the
        # port's channel says (the later head Xen wrote); otherwise the walk order
        for qu in sorted(self.queues, key=lambda x: (not x.live, not _agrees(x, dom))):
            self._walk(qu, nxt)
        self.linked = {p.port for p in dom.ports.values() if p.linked}
        self.linked.update(self.owner)
        # LINKED ports no live queue reaches: no guest will consume them
        self.unreached = {p for p in self.linked if not (p in self.owner and self.owner[p].live)}
        # A stale queue's walk that reaches such ports and then runs into a live chain has found ports a LINK
        # skips (a lost link), not a queue of its own: Xen keeps chains apart, so a queue that lost its READY
        # bit ends by itself.  Its ports are reported as unreachable, not as that stale queue's events.  (A
        # stale head naming one orphan port that ends by itself reads exactly as a queue whose READY was
        # lost; the port's channel does not tell them apart, since set-priority moves it after it is linked.)
        self.lost = {p for qu in self.queues if not qu.live and qu.chain and _joins_live(qu, self.owner)
                     for p in qu.chain}

    def _walk(self, qu: _Queue, nxt: dict[int, object]) -> None:
        q = qu.facts
        if q.chain:
            port = q.chain[0]
        elif q.status == "shared" and q.bad_port is not None:
            port = q.bad_port  # its head is a port an earlier walk took
        else:
            qu.status, qu.bad_port = q.status, q.bad_port  # empty, stale, range, no control block ...
            return
        while True:
            if port in self.owner:
                first = self.owner[port]
                qu.status, qu.bad_port = ("cycle", port) if first is qu else ("shared", port)
                if first is not qu:
                    qu.other = (first.facts.vcpu, first.facts.priority)
                return
            if port not in nxt:  # a snapshot naming a port no segment holds: keep the walker's verdict
                qu.status, qu.bad_port = q.status, port
                return
            self.owner[port] = qu
            qu.chain.append(port)
            step = nxt[port]
            if step is None:
                qu.status = "end"
                return
            if isinstance(step, tuple):
                qu.status, qu.bad_port = step
                return
            port = step


def _agrees(qu: _Queue, dom: DomainFacts) -> bool:
    """The port at ``qu``'s head is, by its channel, one Xen links on this queue."""
    q = qu.facts
    head = q.chain[0] if q.chain else q.bad_port if q.status == "shared" else None
    p = dom.ports.get(head) if head is not None else None
    return p is not None and (p.vcpu, p.priority) == (q.vcpu, q.priority)


def _joins_live(qu: _Queue, owner: dict[int, _Queue]) -> bool:
    return qu.status == "shared" and qu.bad_port in owner and owner[qu.bad_port].live


def _live(v: VcpuFacts, q: QueueFacts) -> str:
    """Why queue ``q`` of vCPU ``v`` is being consumed, or "" when it is not (its head is stale)."""
    if q.ready:
        return f"READY bit {q.priority} set"
    if v.guest_known and 0 <= q.priority < len(v.guest_heads or ()):
        if v.guest_heads[q.priority]:
            return f"the guest is consuming it (its local head is port {v.guest_heads[q.priority]})"
        if v.guest_ready >> q.priority & 1:
            return f"the guest is consuming it (local READY bit {q.priority} set)"
    return ""


_BY_PORT = attrgetter("port")


def examine(ev: Evidence, since: Evidence | None = None, storm_rate: float = STORM_RATE,
            stuck_after: float = STUCK_AFTER) -> Report:
    rep = Report(warnings=list(ev.warnings),
                 unread=[str(u) for u in ev.unread if u.domain is None or u.domain in ev.domains])
    if not ev.domains:
        rep.unread.append(f"{ev.source}: no domain in the evidence")
    age = ev.taken_at - since.taken_at if since is not None else None
    if age is not None and age <= 0:
        rep.warnings.append(f"the --since snapshot was taken {-age:.0f} s after this evidence: no rates, nothing "
                            "compared over time")
        since, age = None, None
    for domid in sorted(ev.domains):
        dom = ev.domains[domid]
        prev = since.domains.get(domid) if since is not None else None
        rep.checked[domid] = len(dom.ports)
        ordered = sorted(dom.ports.values(), key=_BY_PORT)  # (once: seven rules walk a host's 40,000 ports)
        queues = _Queues(dom) if _walked(dom) else None
        before = _Queues(prev) if prev is not None and _walked(prev) else None
        _pending_masked(rep, ordered, dom, prev, age)
        _pending_unlinked(rep, ordered, dom, prev, age)
        if queues is not None:
            _chains(rep, dom, queues, before, age)
            _unreachable(rep, dom, queues, before, age)
            _moved(rep, dom, queues)
        _busy(rep, ordered, dom)
        _selector_idle(rep, dom)
        _no_control_block(rep, ordered, dom)
        _remote_ends(rep, ordered, dom, ev)
        _dead_peers(rep, ordered, dom, ev, prev)
        _dying(rep, dom, prev, age)
        _limit(rep, dom)
        _unreported(rep, dom, ev)
        if prev is not None and age:
            _pending_long(rep, ordered, dom, prev, age, stuck_after)
            _storms(rep, dom, prev, age, storm_rate)
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    rep.findings.sort(key=lambda f: (order[f.severity], f.domain, f.ports, f.rule))
    return rep


def _add(rep: Report, severity: str, rule: str, dom: DomainFacts, ports: list[int], title: str, evidence: str,
         advice: str, vcpu: int | None = None, confirm: bool = False) -> None:
    rep.findings.append(Finding(severity, rule, dom.domain, ports, title, evidence, advice, vcpu, confirm))


def _pending_masked(rep, ordered, dom, prev, age):
    # Linux's PV spinlocks bind one IPI per vCPU, keep it masked for good and wait on it with SCHEDOP_poll, so it
    # rests pending and masked (real Xen, xen-ci: dom0's ports 2 and 12, a 2-vCPU domU's 4 and 16)
    kickers: dict[int, list[int]] = {}
    for p in dom.ports.values():
        if p.state == "ipi" and p.pending and p.masked:
            kickers.setdefault(p.vcpu if p.vcpu is not None else -1, []).append(p.port)
    for p in ordered:
        if not (p.pending and p.masked) or p.state in ("closed", "reserved"):
            continue
        if p.state == "ipi" and len(kickers.get(p.vcpu if p.vcpu is not None else -1, ())) == 1:
            _add(rep, "info", "masked-ipi", dom, [p.port],
                 f"port {p.port} (an IPI of vCPU {p.vcpu}) is pending but masked: most likely Linux's PV-spinlock "
                 "kicker", f"PENDING and MASKED (ipi, the only such IPI of vCPU {p.vcpu})",
                 "Linux binds one IPI per vCPU for its paravirtual spinlocks, keeps it masked and waits on it with "
                 "SCHEDOP_poll, so a pending bit there is normal. If the guest booted with nopvspin, treat it as "
                 "pending-masked.", vcpu=p.vcpu)
            continue
        before = prev.ports.get(p.port) if prev is not None else None
        still = before is not None and before.pending and before.masked
        evidence = f"PENDING and MASKED ({p.state}{_remote(p)})"
        flowed = _delivered(dom, prev, p.port) if still else None
        if flowed:  # real Xen, xen-ci: netback's port under a flood rests masked between its delayed EOIs
            _add(rep, "info", "masked-busy", dom, [p.port],
                 f"port {p.port} is pending and masked in both samples, yet {flowed:,} events were delivered on "
                 "it in between", evidence + f"; {age:.0f} s earlier too; {flowed:,} events handled in between",
                 "Not stuck: Linux keeps a port masked while its handler runs and, for a lateeoi device (netback, "
                 "blkback, /dev/xen/evtchn users), until its EOI, which it holds back while the other end "
                 "notifies with nothing to do. A port masked for good delivers nothing between samples.")
            continue
        if still:
            evidence += f"; already so {age:.0f} s earlier"
        _add(rep, "error" if still else "warning", "pending-masked", dom, [p.port],
             f"port {p.port} is pending but masked" + (f" for at least {age:.0f} s" if still else ""), evidence,
             "The guest masked the port and has not unmasked it, so the event waits: a driver that stopped "
             "servicing it (check its row in the guest's /proc/interrupts) or a lost unmask; "
             f"`xenevt unmask {p.port}` shows whether events flow again.")


def _pending_unlinked(rep, ordered, dom, prev, age):
    two = dom.abi == "2-level"
    for p in ordered:
        if not p.pending or p.masked is not False or p.state in ("closed", "reserved"):
            continue
        if two:
            kind = _unseen(dom, p)
        elif p.linked is False:
            kind = "not LINKED on any queue"
        else:
            continue
        if not kind:
            continue
        before = prev.ports.get(p.port) if prev is not None else None
        still = before is not None and before.pending and before.masked is False and bool(
            _unseen(prev, before) if two else before.linked is False)
        # Linux clears LINKED before it handles the port (FIFO), or the upcall flag and then the selector
        # before it scans (2-level): a guest mid-upcall shows this for microseconds
        _add(rep, "error" if still else "warning", "pending-not-queued", dom, [p.port],
             f"port {p.port} is pending and unmasked but {kind}",
             f"PENDING set, MASKED clear, {kind}" + (f"; already so {age:.0f} s earlier" if still else
                                                      " (one sample: a guest mid-upcall can show this for "
                                                      "microseconds; confirm with --since)"),
             ADVICE_UNSEEN_2L if two else
             "An event that will never be delivered: Xen set PENDING but did not queue it (a lost link), so "
             "nothing wakes the guest for it; raising it again (a notify, or mask+unmask) requeues it. Report the "
             "Xen and guest kernel versions.", vcpu=p.vcpu if two else None)


ADVICE_UNSEEN_2L = (
    "An event the guest will not look for: Linux's 2-level upcall runs only while evtchn_upcall_pending is set "
    "and scans only the words its evtchn_pending_sel names; Xen sets both when it raises an unmasked port, so "
    "a clear one is a lost write. The port waits until another event in the same word reaches that vCPU; "
    "mask+unmask (EVTCHNOP_unmask raises it again) delivers it. Report the Xen and guest kernel versions.")


def _unseen(dom, p) -> str:
    """2-level: why a pending, unmasked port is not where the guest's upcall will look, or ""."""
    if p.selector is False:
        on = f" on vCPU {p.vcpu}" if p.vcpu is not None else ""
        return f"the selector bit of its word ({p.port // 64}) is clear{on}"
    v = dom.vcpus.get(p.vcpu) if p.selector and p.vcpu is not None else None
    if v is not None and v.upcall_pending is False:
        return f"vCPU {p.vcpu}'s evtchn_upcall_pending is clear (its selector bit {p.port // 64} is set)"
    return ""


def _selector_idle(rep, dom):
    """2-level: a selector bit with no pending, unmasked port of this vCPU under it costs the next upcall one
    word's scan and nothing else (Xen leaves it when the port is masked or cleared before the upcall)."""
    if dom.abi != "2-level":
        return
    live: dict[int, set[int]] = {}  # word -> vCPUs with a pending, unmasked port there (-1: a port's vCPU unknown)
    for p in dom.ports.values():
        if p.pending and p.masked is False and p.state not in ("closed", "reserved"):
            live.setdefault(p.port // 64, set()).add(-1 if p.vcpu is None else p.vcpu)
    for v in sorted(dom.vcpus.values(), key=lambda x: x.vcpu):
        idle = [w for w in v.selector_words or [] if not live.get(w, set()) & {v.vcpu, -1}]
        if idle:
            words = ", ".join(map(str, idle))
            _add(rep, "info", "selector-without-pending", dom, [],
                 f"vCPU {v.vcpu}: selector bit(s) {words} set with no pending, unmasked port of this vCPU under "
                 "them", f"evtchn_pending_sel words {words}; ports {idle[0] * 64}..{idle[0] * 64 + 63}"
                 f"{' and the other words' if len(idle) > 1 else ''}: none pending and unmasked on vCPU {v.vcpu}",
                 "Harmless: the next upcall scans those words and finds nothing. Xen leaves a selector bit set when "
                 "the port under it was masked or its event cleared before the guest's upcall ran.", vcpu=v.vcpu)


def _one_sample(queues: _Queues, before: _Queues | None, port: int, age) -> tuple[str, str]:
    """Severity and a note for a state that is exact only where the guest's local queue state is known.

    From frames read outside the guest, one sample cannot tell a guest mid-upcall (READY taken, its own
    heads further down the chain) from events nobody will consume: that is said, and a second sample
    that still shows the port LINKED and unreached makes it an error.
    """
    if queues.guest_known:
        return "error", ""
    if before is not None and port in before.unreached:
        return "error", f"; already so {age:.0f} s earlier"
    return "info", ("; one sample, without the guest's own queue heads (not in this evidence): a guest "
                    "mid-upcall looks the same, so take a second sample with --since")


def _chains(rep, dom, queues: _Queues, before, age):
    for qu in queues.queues:
        q = qu.facts
        where = qu.where
        chain = " -> ".join(map(str, qu.chain)) or "(nothing)"
        if qu.live and qu.status in BROKEN:
            other = f" (vCPU {qu.other[0]} priority {qu.other[1]})" if qu.other else ""
            sev = "warning" if qu.status == "truncated" else "error"
            _add(rep, sev, f"chain-{qu.status}", dom, [qu.bad_port] if qu.bad_port else [],
                 f"queue {where}: the chain {BROKEN[qu.status]}",
                 f"{qu.live}; {_start(q)}: {chain}, then port {qu.bad_port}{other}",
                 "The guest walks this queue by LINK fields: a broken chain loses every event after the break "
                 "(Linux stops at it) or spins. It means the guest wrote the event array wrongly or memory "
                 "was corrupted; the domain needs its event channels reset (reboot or EVTCHNOP_reset).",
                 vcpu=q.vcpu)
        elif qu.status == "empty" and q.ready:
            _add(rep, "error", "ready-without-head", dom, [], f"queue {where}: READY is set but the head is 0",
                 f"READY bit {q.priority} set, head[{q.priority}] = 0",
                 "Xen sets READY only when it writes a new head: a READY bit with no head means the control "
                 "block was written by someone else or the head was lost; the guest finds nothing to consume.",
                 vcpu=q.vcpu)
        elif not qu.live and qu.chain and qu.chain[0] not in queues.lost and qu.status in BROKEN \
                and qu.status != "shared" and not queues.guest_known:
            # READY clear and the guest's heads unknown: maybe a queue the guest is consuming (a break in it
            # matters), maybe a stale head; "shared" is left out: a stale head leading into a chain is normal
            sev, note = _one_sample(queues, before, qu.chain[0], age)
            other = f" (vCPU {qu.other[0]} priority {qu.other[1]})" if qu.other else ""
            _add(rep, "warning" if qu.status == "truncated" and sev == "error" else sev, f"chain-{qu.status}",
                 dom, [qu.bad_port] if qu.bad_port else [], f"queue {where}: the chain {BROKEN[qu.status]}",
                 f"READY bit {q.priority} clear; {_start(q)}: {chain}, then port {qu.bad_port}{other}{note}",
                 "The guest walks this queue by LINK fields: a broken chain loses every event after the break "
                 "(Linux stops at it) or spins. It means the guest wrote the event array wrongly or memory "
                 "was corrupted; the domain needs its event channels reset (reboot or EVTCHNOP_reset).",
                 vcpu=q.vcpu, confirm=sev == "info")
        elif not qu.live and qu.chain and qu.chain[0] not in queues.lost:
            # a stale queue whose walk reached LINKED ports no live queue reaches: nothing will consume them
            sev, note = _one_sample(queues, before, qu.chain[0], age)
            broke = f", then {qu.status} at port {qu.bad_port}" if qu.status in BROKEN else ""
            guest = ", and the guest holds no local READY bit or head for it" if qu.guest_known else ""
            _add(rep, sev, "head-without-ready", dom, [qu.chain[0]],
                 f"queue {where} holds {len(qu.chain)} event(s) but its READY bit is clear",
                 f"{_start(q)}: {chain}{broke}; READY bit {q.priority} clear{guest}{note}",
                 "Nothing will make the guest look at this queue until another event is linked as a new head "
                 "(which it will not be: the queue is not empty), so these events sit forever. Unmasking or "
                 "notifying does not help; EVTCHNOP_reset does.",
                 vcpu=q.vcpu, confirm=sev == "info")


def _start(q: QueueFacts) -> str:
    return f"head {q.head}" + (" (the guest's local head)" if q.head_from == "guest" else "")


def _unreachable(rep, dom, queues: _Queues, before, age):
    broken_after = {qu.bad_port for qu in queues.queues if qu.live and qu.status in BROKEN}
    for port in sorted((queues.linked - set(queues.owner) | queues.lost) - broken_after):
        p = dom.ports.get(port)
        sev, note = _one_sample(queues, before, port, age)
        _add(rep, sev, "linked-unreachable", dom, [port],
             f"port {port} is LINKED but no queue reaches it",
             (f"LINKED (LINK {p.link}), PENDING {p.pending}" if p is not None else "LINKED")
             + "; not on the chain of any vCPU's queue" + note,
             "A lost link: the event is marked queued, so Xen will never link it again, but no head leads to "
             "it, so the guest never consumes it; the port stays dead until the domain's event channels are "
             "reset.", confirm=sev == "info")


def _busy(rep, ordered, dom):
    for p in ordered:
        if p.busy:
            _add(rep, "warning", "busy-left-set", dom, [p.port], f"port {p.port} has BUSY set",
                 f"BUSY set ({'LINKED' if p.linked else 'not LINKED'})",
                 "Xen sets BUSY only while it links an event after this word; left set, it means a link was "
                 "interrupted or the guest rewrote the word, and Xen's next link after it may give up "
                 "(an event lost).")


def _moved(rep, dom, queues: _Queues):
    for port, qu in sorted(queues.owner.items()):
        if not qu.live:
            continue  # a stale walk's ports: which queue they are really on is not known
        vcpu, prio = qu.facts.vcpu, qu.facts.priority
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


def _no_control_block(rep, ordered, dom):
    for p in ordered:
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


def _remote_ends(rep, ordered, dom, ev):
    for p in ordered:
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
    # Xen's get_free_port() skips a freed port while its event is still LINKED: it is not free yet
    busy = sum(1 for p in dom.ports.values() if p.state in ("closed", "unknown") and p.linked)
    used += busy
    two = dom.abi == "2-level"
    if dom.max_ports is not None and (not two or dom.max_ports < abi.EVTCHN_2L_NR_CHANNELS):
        limit, said = dom.max_ports - 1, f"limit {dom.max_ports - 1}" + (f" ({dom.limit_from})" if dom.limit_from
                                                                          else "")
    elif two:
        # the bitmaps' size bounds a 64-bit guest on 2-level whatever max_event_channels says
        limit = abi.EVTCHN_2L_NR_CHANNELS - 1
        said = (f"of the 2-level ABI's {abi.EVTCHN_2L_NR_CHANNELS} ports for a 64-bit guest (port 0 is never "
                "used)")
    else:
        limit = abi.EVTCHN_FIFO_MAX_PORT if dom.domain == 0 else abi.LIBXL_DEFAULT_EVENT_CHANNELS
        said = (f"assuming Xen's default limit of {limit} (max_event_channels: the hypervisor reports no domain's "
                "limit, and this source had no toolstack config to read it from)")
    more = (" On the 2-level ABI no setting gives more than 4096 ports: a guest that needs more must use FIFO "
            "(Linux does when Xen offers it, unless booted with xen.fifo_events=0).") if two else ""
    if used >= limit:
        _add(rep, "error", "ports-exhausted", dom, [], f"domain {dom.domain} has no free event channel",
             f"{used} ports in use{_busy_note(busy)}, {said}",
             "Every new bind in this domain fails (ENOSPC): raise max_event_channels in the domain's config, or "
             "find who leaks ports (the list shows them)." + more)
    elif used >= 0.9 * limit:
        _add(rep, "warning", "ports-near-limit", dom, [], f"domain {dom.domain} is near its event-channel limit",
             f"{used} ports in use{_busy_note(busy)}, {said}",
             "New devices or vCPUs will soon fail to bind (ENOSPC): raise max_event_channels or look for a leak."
             + more)


def _busy_note(busy: int) -> str:
    return f" ({busy} of them closed but still LINKED: Xen reuses no port until its event is consumed)" if busy else ""


def _remote(p) -> str:
    if p.state == "interdomain" and p.remote_domain is not None:
        return f" to domain {p.remote_domain} port {p.remote_port}"
    if p.state == "unbound" and p.remote_domain is not None:
        return f" waiting for domain {p.remote_domain}"
    if p.state == "virq" and p.virq is not None:
        return f" VIRQ {p.virq}"
    return ""


# --- dead peers and stuck waiters ---------------------------------------------------------------------------
def _peer_state(ev: Evidence, domid: int) -> str:
    """"dying", "gone" or "" (alive, or not known): from the hypervisor's domain list and its dying flags."""
    d = ev.domains.get(domid)
    if d is not None and d.dying:
        return "dying"
    if ev.listed is not None and domid not in ev.listed and domid < abi.DOMID_FIRST_RESERVED:
        return "gone"
    return ""


def _dead_peers(rep, ordered, dom, ev, prev):
    """A port connected to, or waiting for, a domain that is dying or no longer exists.  Xen's evtchn_destroy()
    closes every port of a destroyed domain, which sends each interdomain peer back to unbound waiting for the
    dead domid; alloc_unbound stores the remote domid unchecked.  Either way nothing will ever connect."""
    states: dict[int, str] = {}  # (each peer's once: ev.listed is a list, and dom0 has 20,000 peers' ports)
    for p in ordered:
        if p.state not in ("interdomain", "unbound") or p.remote_domain is None:
            continue
        dead = states.get(p.remote_domain)
        if dead is None:
            dead = states[p.remote_domain] = _peer_state(ev, p.remote_domain)
        if not dead:
            continue
        was = prev.ports.get(p.port) if prev is not None else None
        history = ""
        if was is not None and was.state == "interdomain" and was.remote_domain == p.remote_domain:
            history = f"; connected to its port {was.remote_port} in the earlier sample"
        what = "which is dying (XEN_DOMINF_dying)" if dead == "dying" else "which no longer exists"
        if p.state == "interdomain":
            _add(rep, "error", "dead-peer", dom, [p.port],
                 f"port {p.port} is connected to domain {p.remote_domain}, {what}",
                 f"interdomain -> {p.remote_domain}:{p.remote_port}; domain {p.remote_domain} "
                 f"{'is listed as dying' if dead == 'dying' else 'is not in the hypervisor domain list'}",
                 "Xen closes a dying domain's ports as it destroys it, which turns this end unbound: seen still "
                 "connected, the destroy is under way or the samples are from different moments; sample again. "
                 "Events sent on it reach nobody.")
            continue
        _add(rep, "warning", "dead-peer", dom, [p.port],
             f"port {p.port} is waiting for domain {p.remote_domain}, {what}",
             f"unbound, waiting for domain {p.remote_domain}{history}; domain {p.remote_domain} "
             f"{'is listed as dying' if dead == 'dying' else 'is not in the hypervisor domain list'}",
             f"Nothing will ever bind to it: domain {p.remote_domain} was destroyed (Xen sent this end back to "
             "unbound) or never existed. It is usually a backend whose frontend went away without the device being "
             f"removed: check `xenstore-ls /local/domain/{dom.domain}/backend` for a directory of domain "
             f"{p.remote_domain} and remove the device (xl block-detach/network-detach, or restart the driver "
             "domain's backend); the port is freed when its owner closes it.")


def _dying(rep, dom, prev, age):
    """A domain listed as dying: its ports are closed, but something still holds a reference to it."""
    if not dom.dying:
        return
    still = prev is not None and prev.dying and age is not None
    _add(rep, "warning" if still else "info", "domain-dying", dom, [],
         f"domain {dom.domain} is dying" + (f", and was {age:.0f} s earlier" if still else ""),
         "XEN_DOMINF_dying set" + (f" in both samples, {age:.0f} s apart" if still else ""),
         "Xen has closed its event channels; the domain disappears once the last reference to its memory goes. "
         "Stuck dying (a zombie), it is usually a backend or device model still mapping its grants: look for "
         f"its backends in xenstore and its qemu process; `xl destroy {dom.domain}` again retries.")


def _pending_long(rep, ordered, dom, prev, age, stuck_after):
    """A port pending in both samples, with nothing delivered on it in between (where that is counted), that the
    masked and never-queued rules do not already explain: its event waits and the guest does not take it."""
    if age < stuck_after:
        return
    handled = _by_port(dom.counters)
    before = _by_port(prev.counters)
    for p in ordered:
        if not p.pending or p.masked is not False or p.state in ("closed", "reserved", "unknown"):
            continue
        if p.linked is False or dom.abi == "2-level" and _unseen(dom, p):
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
        _add(rep, "warning", "pending-stuck", dom, [p.port],
             f"port {p.port} has been pending for at least {age:.0f} s",
             f"PENDING, unmasked, {p.state}{_remote(p)} in both samples, {age:.0f} s apart{counted}",
             "The event is queued for the guest but the guest is not taking it: the vCPU it notifies "
             f"(vCPU {p.vcpu}) may be blocked with events off, offline, or its upcall handler stuck. Look at the "
             "guest's console and `xenevt dump -d " + str(dom.domain) + "`; a notify on the port does not help.",
             vcpu=p.vcpu)


def _delivered(dom, prev, port: int) -> int | None:
    """Events handled on ``port`` between the two samples, where its counter is known in both (else None)."""
    if prev is None:
        return None
    now, then = _by_port(dom.counters).get(port), _by_port(prev.counters).get(port)
    if now is None or then is None or now.handled is None or then.handled is None:
        return None
    return _delta(now.handled, then.handled)


def _by_port(counters: list[CounterFacts]) -> dict[int, CounterFacts]:
    return {c.port: c for c in counters if c.port is not None}


def _storms(rep, dom, prev, age, storm_rate):
    """Rates from two samples of the domain's counters: a storm, spurious events growing, EOIs delayed."""
    old = {c.key: c for c in prev.counters}
    for c in dom.counters:
        o = old.get(c.key)
        if o is None:
            continue
        label, ports = _counter_label(dom, c)
        events = max(_delta(c.raised, o.raised), _delta(c.handled, o.handled))
        rate = events / age
        if rate >= storm_rate:
            sender = ""
            p = dom.ports.get(c.port) if c.port is not None else None
            if p is not None and p.state == "interdomain":
                sender = f"; the sender is domain {p.remote_domain} (its port {p.remote_port})"
            _add(rep, "warning", "event-storm", dom, ports,
                 f"{label} receives {rate:,.0f} events/s: an event storm",
                 f"{events:,} events in {_secs(age)} s (threshold {storm_rate:,.0f}/s, --storm-rate){sender}",
                 "A peer notifying in a loop (the XSA-332/XSA-391 class) costs this domain an upcall per event. A "
                 "guest's frontend doing it is misbehaving or hostile: Linux throttles it (watch its xenbus "
                 "spurious_events and jiffies_eoi_delayed); pause or destroy that guest, or close the channel. If "
                 "the device is just this busy, raise --storm-rate.")
        spurious = _delta(c.spurious, o.spurious)
        if spurious >= SPURIOUS_MIN and spurious / age >= 1:
            _add(rep, "warning", "spurious-events", dom, ports,
                 f"{label}: {spurious:,} spurious events in {_secs(age)} s",
                 f"xenbus spurious_events {o.spurious} -> {c.spurious} ({spurious / age:,.1f}/s)",
                 "Events that needed no action: the other end notifies without putting work on the ring, a rogue or "
                 "buggy frontend/backend (XSA-391). Linux delays the EOI of such a device more each time; find the "
                 "other end's domain in the device's xenstore node and check that guest.")
        delayed = _delta(c.eoi_delayed, o.eoi_delayed)
        if delayed > 0:
            _add(rep, "warning", "eoi-delayed", dom, ports,
                 f"{label}: Linux held its EOI back for {delayed:,} jiffies in {_secs(age)} s",
                 f"xenbus jiffies_eoi_delayed {o.eoi_delayed} -> {c.eoi_delayed}",
                 "Linux throttles a device whose events keep finding no work (lateeoi): the other end is flooding "
                 "it, and the device slows down for everyone. The first sign of a rogue peer: find which domain is "
                 "on the other end (the device's xenstore node) and stop it.")


def _secs(age: float) -> str:
    return f"{age:.0f}" if age >= 10 else f"{age:.2g}"


def _delta(now: int | None, then: int | None) -> int:
    """Counted since the earlier sample; a counter that went back (restarted) counts nothing."""
    return max(now - then, 0) if now is not None and then is not None else 0


def _counter_label(dom, c: CounterFacts) -> tuple[str, list[int]]:
    if c.port is not None:  # a port's own counter, or an IRQ row tied to its port (netback's vif queues)
        return (f"port {c.port}" if c.key == f"port {c.port}" else f"port {c.port} ({c.key} {c.name})"), [c.port]
    return f"{c.key} ({c.name})" if c.name and c.name != c.key else c.key, []


# --- versions -----------------------------------------------------------------------------------------------
def _unreported(rep, dom, ev):
    """Ports EVTCHNOP_status refused but the 'e' dump shows Xen consuming: a version's rule, not a failure."""
    if not dom.unreported:
        return
    ports = ", ".join(map(str, dom.unreported))
    if ev.xen_version:
        who = f"Xen {ev.xen_version}"
        note = ("" if behaves(ev.xen_version, XEN_OWNED_STATUS_HIDDEN)
                else f"; unexpected on Xen {ev.xen_version}, which reports them")
    else:
        who, note = "Xen", " (as Xen 4.15 to 4.18 do; this source does not say which Xen it is)"
    _add(rep, "info", "xen-owned-unreported", dom, list(dom.unreported),
         f"{who} does not report ports Xen itself consumes (port(s) {ports})",
         f"EVTCHNOP_status refused port(s) {ports} (EACCES); the 'e' dump shows them with x= (Xen's consumer)"
         + note,
         "Not a failure: Xen 4.15 to 4.18 refuse EVTCHNOP_status on ports an ioreq server or vm_event ring "
         "uses (4.19 reports them again); their state here comes from the 'e' dump alone.")
