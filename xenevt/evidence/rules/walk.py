"""A domain's FIFO queues as doctor judges them: live or stale, and their chains walked live queues first.

The one pass every queue rule reads (rules/queues.py): walked once per domain and sample, on demand
(``Subject.queues``), never redone per rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import DomainFacts, QueueFacts, VcpuFacts

# a walker's segment, port -> what follows it: the next port, None at a chain's end, or (status, bad port)
_Step = int | tuple[str, int | None] | None


def walked(dom: DomainFacts) -> bool:
    return any(v.control_block for v in dom.vcpus.values())


@dataclass
class Queue:
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


class Queues:
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
        self.queues: list[Queue] = []
        for v in vcpus:
            for q in v.queues:
                self.queues.append(Queue(q, _live(v, q), v.guest_known))
        # the walker's segments: port -> next port, None at a chain's end, or (status, bad port) where it broke
        nxt: dict[int, _Step] = {}
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
        self.owner: dict[int, Queue] = {}
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

    def _walk(self, qu: Queue, nxt: dict[int, _Step]) -> None:
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


def _agrees(qu: Queue, dom: DomainFacts) -> bool:
    """The port at ``qu``'s head is, by its channel, one Xen links on this queue."""
    q = qu.facts
    head = q.chain[0] if q.chain else q.bad_port if q.status == "shared" else None
    p = dom.ports.get(head) if head is not None else None
    return p is not None and (p.vcpu, p.priority) == (q.vcpu, q.priority)


def _joins_live(qu: Queue, owner: dict[int, Queue]) -> bool:
    return qu.status == "shared" and qu.bad_port is not None and qu.bad_port in owner \
        and bool(owner[qu.bad_port].live)


def _live(v: VcpuFacts, q: QueueFacts) -> str:
    """Why queue ``q`` of vCPU ``v`` is being consumed, or "" when it is not (its head is stale)."""
    if q.ready:
        return f"READY bit {q.priority} set"
    heads, ready = v.guest_heads, v.guest_ready  # (both known, or the guest's state is not: guest_known)
    if heads is not None and ready is not None and 0 <= q.priority < len(heads):
        if heads[q.priority]:
            return f"the guest is consuming it (its local head is port {heads[q.priority]})"
        if ready >> q.priority & 1:
            return f"the guest is consuming it (local READY bit {q.priority} set)"
    return ""

