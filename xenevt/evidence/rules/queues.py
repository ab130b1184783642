"""Rules on FIFO queues: broken chains, READY and head out of step, LINKED ports no queue reaches, events
queued where their channel no longer says, BUSY left set, and vCPUs without a control block.

The chain rules read one walk of the domain's queues (rules/walk.py, ``Subject.queues``).  From frames read
outside the guest, one sample cannot tell a guest mid-upcall from events nobody will consume: such a
finding is info and asks for a second sample (``confirm``); an earlier sample showing it already so, or the
guest's own queue state in the evidence, makes it an error.
"""

from __future__ import annotations

from ... import abi
from ..model import PortFacts, QueueFacts
from .common import remote
from .registry import Needs, Rule, Subject, check
from .walk import Queues

BROKEN = {"range": "points past the event array (or at a page that is not there)",
          "unlinked": "points at a port that is not LINKED",
          "cycle": "comes back on itself (a cycle)",
          "shared": "runs into another queue's chain",
          "truncated": "is longer than the walk allows"}


def one_sample(queues: Queues, before: Queues | None, port: int, age: float | None) -> tuple[str, str]:
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


def _ready_seen(queues: Queues, before: Queues | None, q: QueueFacts, age: float | None) -> tuple[str, str]:
    """A READY bit over a consumed head: exact in a consistent copy (the guest's own state known); read from
    frames, the control block and the word are two reads, so it takes a second sample showing it still."""
    if queues.guest_known:
        return "error", ""
    if before is not None and any(b.facts.vcpu == q.vcpu and b.facts.priority == q.priority and b.facts.ready
                                  and b.status == "stale" and b.facts.head == q.head for b in before.queues):
        return "error", f"; already so {age:.0f} s earlier"
    return "info", ("; one sample of frames read outside the guest (the control block and the word at two "
                    "instants): take a second sample with --since")


_CHAIN_SEVERITIES = {"shared": ("error",), "truncated": ("info", "warning")}  # the others: info or error


@check(*(Rule(f"chain-{status}", _CHAIN_SEVERITIES.get(status, ("info", "error")),
              f"A queue's chain {what}: the guest loses every event after the break, or spins.")
         for status, what in BROKEN.items()),
       Rule("ready-without-head", ("error",), "A queue's READY bit set with head 0: the guest finds nothing to "
            "consume."),
       Rule("head-without-ready", ("info", "error"), "A queue holding events with its READY bit clear and no "
            "guest consuming it: they sit until EVTCHNOP_reset."),
       Rule("ready-head-consumed", ("info", "error"), "A queue's READY bit set while its head is no longer "
            "LINKED: its events were taken through another queue (a walk from a stale head)."),
       needs=Needs.QUEUES | Needs.EARLIER)
def chains(s: Subject) -> None:
    queues, before, age = s.queues, s.before, s.age
    assert queues is not None  # (Needs.QUEUES)
    for qu in queues.queues:
        q = qu.facts
        where = qu.where
        chain = " -> ".join(map(str, qu.chain)) or "(nothing)"
        if qu.live and qu.status in BROKEN:
            other = f" (vCPU {qu.other[0]} priority {qu.other[1]})" if qu.other else ""
            sev = "warning" if qu.status == "truncated" else "error"
            s.add(sev, f"chain-{qu.status}", [qu.bad_port] if qu.bad_port else [],
                  f"queue {where}: the chain {BROKEN[qu.status]}",
                  f"{qu.live}; {start(q)}: {chain}, then port {qu.bad_port}{other}",
                  "The guest walks this queue by LINK fields: a broken chain loses every event after the break "
                  "(Linux stops at it) or spins. It means the guest wrote the event array wrongly or memory "
                  "was corrupted; the domain needs its event channels reset (reboot or EVTCHNOP_reset).",
                  vcpu=q.vcpu)
        elif qu.status == "stale" and q.ready and q.head_from != "guest":
            # Xen sets READY only as it writes a new head, and only the guest clears LINKED, after taking READY:
            # a READY bit over a head no longer LINKED means the head was consumed from another queue's walk
            sev, note = _ready_seen(queues, before, q, age)
            s.add(sev, "ready-head-consumed", [q.head],
                  f"queue {where}: READY is set but its head, port {q.head}, is no longer LINKED",
                  f"READY bit {q.priority} set, head[{q.priority}] = {q.head}, not LINKED{note}",
                  "The guest consumed this queue's head before taking its READY bit: only a walk that started "
                  "from another queue's stale head gets there, so that queue's guest handled this one's events "
                  "on the wrong vCPU or priority, and whatever was linked behind the head is no longer reached "
                  "from here. Xen has set READY for every add (fixed in 4.4), or the guest's walk is wrong.",
                  vcpu=q.vcpu, confirm=sev == "info")
        elif qu.status == "empty" and q.ready:
            s.add("error", "ready-without-head", [], f"queue {where}: READY is set but the head is 0",
                  f"READY bit {q.priority} set, head[{q.priority}] = 0",
                  "Xen sets READY only when it writes a new head: a READY bit with no head means the control "
                  "block was written by someone else or the head was lost; the guest finds nothing to consume.",
                  vcpu=q.vcpu)
        elif not qu.live and qu.chain and qu.chain[0] not in queues.lost and qu.status in BROKEN \
                and qu.status != "shared" and not queues.guest_known:
            # READY clear and the guest's heads unknown: maybe a queue the guest is consuming (a break in it
            # matters), maybe a stale head; "shared" is left out: a stale head leading into a chain is normal
            sev, note = one_sample(queues, before, qu.chain[0], age)
            other = f" (vCPU {qu.other[0]} priority {qu.other[1]})" if qu.other else ""
            s.add("warning" if qu.status == "truncated" and sev == "error" else sev, f"chain-{qu.status}",
                  [qu.bad_port] if qu.bad_port else [], f"queue {where}: the chain {BROKEN[qu.status]}",
                  f"READY bit {q.priority} clear; {start(q)}: {chain}, then port {qu.bad_port}{other}{note}",
                  "The guest walks this queue by LINK fields: a broken chain loses every event after the break "
                  "(Linux stops at it) or spins. It means the guest wrote the event array wrongly or memory "
                  "was corrupted; the domain needs its event channels reset (reboot or EVTCHNOP_reset).",
                  vcpu=q.vcpu, confirm=sev == "info")
        elif not qu.live and qu.chain and qu.chain[0] not in queues.lost:
            # a stale queue whose walk reached LINKED ports no live queue reaches: nothing will consume them
            sev, note = one_sample(queues, before, qu.chain[0], age)
            broke = f", then {qu.status} at port {qu.bad_port}" if qu.status in BROKEN else ""
            guest = ", and the guest holds no local READY bit or head for it" if qu.guest_known else ""
            s.add(sev, "head-without-ready", [qu.chain[0]],
                  f"queue {where} holds {len(qu.chain)} event(s) but its READY bit is clear",
                  f"{start(q)}: {chain}{broke}; READY bit {q.priority} clear{guest}{note}",
                  "Nothing will make the guest look at this queue until another event is linked as a new head "
                  "(which it will not be: the queue is not empty), so these events sit forever. Unmasking or "
                  "notifying does not help; EVTCHNOP_reset does.",
                  vcpu=q.vcpu, confirm=sev == "info")


def start(q: QueueFacts) -> str:
    return f"head {q.head}" + (" (the guest's local head)" if q.head_from == "guest" else "")


@check(Rule("linked-unreachable", ("info", "error"), "A port LINKED that no queue reaches: a lost link, its "
            "port dead until the domain's event channels are reset."),
       needs=Needs.QUEUES | Needs.EARLIER)
def unreachable(s: Subject) -> None:
    dom, queues, before, age = s.dom, s.queues, s.before, s.age
    assert queues is not None  # (Needs.QUEUES)
    broken_after = {qu.bad_port for qu in queues.queues if qu.live and qu.status in BROKEN}
    for port in sorted((queues.linked - set(queues.owner) | queues.lost) - broken_after):
        p = dom.ports.get(port)
        sev, note = one_sample(queues, before, port, age)
        s.add(sev, "linked-unreachable", [port],
              f"port {port} is LINKED but no queue reaches it",
              (f"LINKED (LINK {p.link}), PENDING {p.pending}" if p is not None else "LINKED")
              + "; not on the chain of any vCPU's queue" + note,
              "A lost link: the event is marked queued, so Xen will never link it again, but no head leads to "
              "it, so the guest never consumes it; the port stays dead until the domain's event channels are "
              "reset.", confirm=sev == "info")


@check(Rule("queued-elsewhere", ("info",), "An event queued on a vCPU or priority its channel no longer names: "
            "normal right after set-priority or bind-vcpu."),
       needs=Needs.QUEUES)
def queued_elsewhere(s: Subject) -> None:
    dom, queues = s.dom, s.queues
    assert queues is not None  # (Needs.QUEUES)
    for port, qu in sorted(queues.owner.items()):
        if not qu.live:
            continue  # a stale walk's ports: which queue they are really on is not known
        vcpu, prio = qu.facts.vcpu, qu.facts.priority
        p = dom.ports.get(port)
        if p is None or p.priority is None and p.vcpu is None:
            continue
        if pinned(p) and p.vcpu is not None and p.vcpu != vcpu:
            continue  # queued-on-wrong-vcpu's
        moved = []
        if p.priority is not None and p.priority != prio:
            moved.append(f"priority {prio} -> {p.priority}")
        if p.vcpu is not None and p.vcpu != vcpu and p.state not in ("closed",):
            moved.append(f"vCPU {vcpu} -> {p.vcpu}")
        if moved:
            s.add("info", "queued-elsewhere", [port],
                  f"port {port} is queued on vCPU {vcpu} priority {prio}, but its channel now says otherwise",
                  ", ".join(moved),
                  "Normal right after set-priority or bind-vcpu: this event is delivered from its old queue and "
                  "later ones use the new one. If it stays so, the old queue is not being consumed.", vcpu=vcpu)


def pinned(p: PortFacts) -> bool:
    """A port that cannot move to another vCPU (EVTCHNOP_bind_vcpu refuses an IPI and a per-vCPU VIRQ)."""
    return p.state == "ipi" or (p.state == "virq" and p.virq in abi.PER_VCPU_VIRQS)


@check(Rule("queued-on-wrong-vcpu", ("error",), "An IPI or per-vCPU VIRQ port LINKED on another vCPU's queue: it "
            "cannot have moved there, so the port was handed out while an earlier channel's event was still "
            "queued; its vCPU is never told of it."),
       needs=Needs.QUEUES)
def queued_on_wrong_vcpu(s: Subject) -> None:
    dom, queues = s.dom, s.queues
    assert queues is not None  # (Needs.QUEUES)
    for port, qu in sorted(queues.owner.items()):
        p = dom.ports.get(port)
        if not qu.live or p is None or not pinned(p) or p.vcpu is None or p.vcpu == qu.facts.vcpu:
            continue
        what = "IPI" if p.state == "ipi" else f"VIRQ {p.virq}"
        s.add("error", "queued-on-wrong-vcpu", [port],
              f"port {port} ({what} of vCPU {p.vcpu}) is queued on vCPU {qu.facts.vcpu}'s queue",
              f"{what} bound to vCPU {p.vcpu}, " + ("PENDING, " if p.pending else "") +
              f"LINKED on vCPU {qu.facts.vcpu} priority {qu.facts.priority}",
              f"An {what} cannot move between vCPUs, so its word was already LINKED there when the port was "
              f"bound: a closed port handed out again while its old event was still queued (Xen before "
              f"78e24c269b skipped no busy port).  vCPU {p.vcpu} is never told of this event; vCPU "
              f"{qu.facts.vcpu} takes it as its own when it drains that queue.  Close and rebind the port.",
              vcpu=qu.facts.vcpu)


@check(Rule("busy-left-set", ("warning",), "BUSY set on an event word: a link was interrupted, and Xen's next "
            "link after it may lose an event."))
def busy(s: Subject) -> None:
    for p in s.ordered:
        if p.busy:
            s.add("warning", "busy-left-set", [p.port], f"port {p.port} has BUSY set",
                  f"BUSY set ({'LINKED' if p.linked else 'not LINKED'})",
                  "Xen sets BUSY only while it links an event after this word; left set, it means a link was "
                  "interrupted or the guest rewrote the word, and Xen's next link after it may give up "
                  "(an event lost).")


@check(Rule("vcpu-without-control-block", ("error",), "A port notifying a vCPU that registered no FIFO control "
            "block: Xen drops its every event."))
def no_control_block(s: Subject) -> None:
    dom = s.dom
    for p in s.ordered:
        if p.state in ("closed", "reserved", "unknown") or p.vcpu is None:
            continue
        v = dom.vcpus.get(p.vcpu)
        if v is not None and v.control_block is False:
            # a CPU merely taken offline keeps its block (Xen keeps it, Linux registers one per CPU once)
            why = f"vCPU {p.vcpu} was never brought up" if v.state == "never up" else \
                f"vCPU {p.vcpu} never registered a control block"
            s.add("error", "vcpu-without-control-block", [p.port],
                  f"port {p.port} notifies vCPU {p.vcpu}, which has no control block" +
                  (" (never brought up)" if v.state == "never up" else ""),
                  f"{p.state}{remote(p)}, notify vCPU {p.vcpu}; {why}",
                  "Xen drops every event for a vCPU without a control block: a CPU never brought up (past the "
                  "online count, xl's maxvcpus), or one that was offline across a save/restore (Linux's resume "
                  "frees an offline CPU's block); a CPU merely taken offline keeps its block and its events "
                  "wait.  Bind the port to an online vCPU (`xenevt bind-vcpu`) or bring the CPU up.",
                  vcpu=p.vcpu)




@check(Rule("raised-not-delivered", ("warning", "error"), "Events Xen raised on an unmasked port, none "
            "delivered, none pending or queued: lost before the guest saw them."),
       needs=Needs.EARLIER)
def raised_not_delivered(s: Subject) -> None:
    """Where the source counts the events Xen raised per port (the simulator): every event raised on a port
    vanished.  A masked port is left out (its guest may clear PENDING without handling, by design).  On 2-level
    there is no LINKED bit to look at: nothing pending is nothing waiting."""
    dom, prev, age = s.dom, s.prev, s.age
    fifo = dom.abi == "FIFO"
    if not fifo and dom.abi != "2-level":
        return
    counters, before = s.counters, s.counters_before
    for p in s.ordered:
        if p.state in ("closed", "reserved", "unknown") or p.pending is not False or p.masked is not False \
                or (fifo and p.linked is not False):
            continue
        c = counters.get(p.port)
        if c is None or not c.raised or c.handled != 0:
            continue
        then = before.get(p.port)
        was = prev.ports.get(p.port) if prev is not None else None
        still = then is not None and then.handled == 0 and bool(then.raised) and was is not None \
            and was.state == p.state and was.pending is False
        s.add("error" if still else "warning", "raised-not-delivered", [p.port],
              f"port {p.port}: {c.raised} event(s) raised, none delivered, none waiting",
              f"{p.state}{remote(p)}; raised {c.raised}, delivered 0; PENDING, MASKED"
              + (" and LINKED clear" if fifo else " clear")
              + (f"; already so {age:.0f} s earlier" if still and age is not None else
                 " (one sample: a guest mid-upcall clears PENDING before it counts the event; confirm with "
                 "--since)"),
              "Xen counted these events raised, yet the guest never handled one and none waits: they were lost "
              "before the guest saw them (Xen before 4.4 dropped an event for a port whose array page the guest "
              "had not added yet; a guest that clears PENDING while binding throws one away), and whoever sent "
              "them may be waiting for an answer. A notify on the port delivers the next one.")
