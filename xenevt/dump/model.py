"""Decode one domain's FIFO memory into queues, chains and flagged event words.

Nothing here writes to the memory: chains come from the engine's walker,
which follows LINK fields without touching a bit, bounded by an owner map
so that cycles and corrupted links end with a status instead of a hang.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .. import abi
from ..engine import DomainMemory, Walk, engine_for
from ..ports import PortStatus

Q = abi.EVTCHN_FIFO_MAX_QUEUES

# Walk statuses that mean the queue is broken (the others are normal states)
BROKEN = {Walk.RANGE, Walk.UNLINKED, Walk.CYCLE, Walk.SHARED, Walk.TRUNCATED}


@dataclass
class QueueView:
    vcpu: int
    priority: int
    ready: bool                 # the priority's bit in the control block's READY
    head: int                   # where the walk started
    head_from: str              # "guest" (Linux's local head, mid-consume) or "control block"
    chain: list[int]
    status: str                 # the walker's verdict: end, stale, range, unlinked, cycle, shared, truncated
    bad_port: int | None = None
    other_queue: tuple[int, int] | None = None  # (vcpu, priority) a shared chain joins
    note: str = ""

    @property
    def broken(self) -> bool:
        return Walk[self.status.upper()] in BROKEN


@dataclass
class VcpuView:
    vcpu: int
    control_block: bool
    ready: int = 0                        # READY bitmap of the control block
    heads: list[int] = field(default_factory=list)  # control block head[16]
    guest_ready: int | None = None        # Linux's local copy of READY (None: not known for this source)
    guest_heads: list[int] | None = None  # Linux's local heads
    queues: list[QueueView] = field(default_factory=list)


@dataclass
class WordView:
    port: int
    word: int
    pending: bool
    masked: bool
    linked: bool
    busy: bool
    link: int
    channel: PortStatus | None = None     # what the hypervisor says of the port, where known

    @property
    def flags(self) -> str:
        return abi.word_flags(self.word)


@dataclass
class DomainDump:
    domain: int
    source: str
    nr_pages: int
    max_ports: int | None
    vcpus: list[VcpuView]
    words: list[WordView]
    plain_masked: int            # words that are exactly MASKED (the boot default) and not shown
    abi: str = "FIFO"
    warnings: list[str] = field(default_factory=list)  # values no Xen or Linux writes: shown as read, flagged

    @property
    def nr_ports(self) -> int:
        return self.nr_pages * abi.EVENT_WORDS_PER_PAGE

    def broken_queues(self) -> list[QueueView]:
        return [q for v in self.vcpus for q in v.queues if q.broken]

    def as_dict(self) -> dict:
        d = {"domain": self.domain, "source": self.source, "abi": self.abi, "event_array_pages": self.nr_pages,
             "ports_with_words": self.nr_ports, "max_ports": self.max_ports, "plain_masked_words": self.plain_masked,
             "warnings": list(self.warnings), "vcpus": [], "words": []}
        for v in self.vcpus:
            vd = {"vcpu": v.vcpu, "control_block": v.control_block}
            if v.control_block:
                vd["ready"] = _bits(v.ready)
                vd["heads"] = {str(p): h for p, h in enumerate(v.heads) if h}
            if v.guest_heads is not None:
                vd["guest"] = {"ready": _bits(v.guest_ready or 0),
                               "heads": {str(p): h for p, h in enumerate(v.guest_heads) if h}}
            vd["queues"] = [
                {k: val for k, val in asdict(q).items() if val is not None and val != ""} | {"broken": q.broken}
                for q in v.queues
            ]
            d["vcpus"].append(vd)
        for w in self.words:
            wd = {"port": w.port, "word": f"{w.word:#010x}", "flags": w.flags, "pending": w.pending,
                  "masked": w.masked, "linked": w.linked, "busy": w.busy, "link": w.link}
            if w.channel is not None:
                wd["channel"] = {k: v for k, v in w.channel.as_dict().items()
                                 if k not in ("domain", "port", "word", "flags")}
            d["words"].append(wd)
        return d


def _bits(mask: int) -> list[int]:
    return [p for p in range(Q) if mask >> p & 1]


def _note(status: Walk, bad: int, other: int) -> str:
    return {
        Walk.STALE: f"head {bad} is no longer LINKED: the queue was consumed, the head is stale",
        Walk.RANGE: f"LINK/head {bad} has no event word (past the array or port 0's page missing)",
        Walk.UNLINKED: f"LINK to port {bad}, which is not LINKED: the rest of the chain is lost",
        Walk.CYCLE: f"cycle: the chain comes back to port {bad}",
        Walk.SHARED: f"joins the chain of vCPU {other // Q} priority {other % Q} at port {bad}",
        Walk.TRUNCATED: f"chain longer than the dump buffer, cut at port {bad}",
        Walk.NO_CONTROL: "vCPU has no control block",
    }.get(status, "")


def build_dump(mem: DomainMemory, domain: int, source: str, *, channels: dict[int, PortStatus] | None = None,
               guest_known: bool = True, all_words: bool = False, max_ports: int | None = None,
               engine=None) -> DomainDump:
    """Decode ``mem``.  ``guest_known``: the source holds Linux's local heads (sim, kernel), so
    walks start where the guest would go on; otherwise they start at the control blocks' heads."""
    engine = engine or engine_for(mem)
    nv = mem.nr_vcpus
    starts = None
    if guest_known:
        starts = [mem.guest(v)[1 + p] for v in range(nv) for p in range(Q)]
    results, chain = engine.walk(starts)
    warn = _Warnings(list(mem.warnings))
    vcpus = []
    for v in range(nv):
        cb = mem.control_block(v)
        view = VcpuView(v, cb is not None)
        if cb is not None:
            view.ready = cb[0]
            view.heads = list(cb[2:18])
            warn.queue_state(f"vCPU {v} control block", view.ready, view.heads, mem.nr_ports)
        if guest_known:
            g = mem.guest(v)
            view.guest_ready, view.guest_heads = g[0], list(g[1:17])
            warn.queue_state(f"vCPU {v} guest (Linux's cpu_queue)", view.guest_ready, view.guest_heads,
                             mem.nr_ports)
        for p in range(Q):
            head, start, count, status, bad, other = results[v * Q + p]
            status = Walk(status)
            ready = bool(view.ready >> p & 1)
            if status == Walk.EMPTY and not ready:
                continue
            if status == Walk.NO_CONTROL and p:
                continue  # one line per vCPU is enough
            local = bool(guest_known and view.guest_heads and view.guest_heads[p])
            q = QueueView(v, p, ready, head, "guest" if local else "control block", list(chain[start:start + count]),
                          status.name.lower(), bad or None, (other // Q, other % Q) if status == Walk.SHARED else None,
                          _note(status, bad, other))
            if status == Walk.STALE and not ready:
                continue  # a consumed queue: Linux never clears the control block's head
            view.queues.append(q)
        vcpus.append(view)
    words = []
    plain = 0
    channels = channels or {}
    for port in range(mem.nr_ports):
        w = mem.word(port)
        ch = channels.get(port)
        if w == 0 and ch is None:
            continue
        if w == abi.WORD_MASKED and ch is None and not all_words:
            plain += 1
            continue
        if w & abi.WORD_UNUSED:
            warn.add("unused", f"event word of port {port} is {w:#010x}: bits 17..27 set, which the ABI leaves unused")
        if w & abi.WORD_LINKED and abi.word_link(w) >= mem.nr_ports:
            warn.add("link", f"event word of port {port} is LINKED to port {abi.word_link(w)}, past the array's "
                     f"{mem.nr_ports} ports")
        words.append(WordView(port, w, bool(w & abi.WORD_PENDING), bool(w & abi.WORD_MASKED),
                              bool(w & abi.WORD_LINKED), bool(w & abi.WORD_BUSY), abi.word_link(w), ch))
    return DomainDump(domain, source, mem.nr_pages, max_ports, vcpus, words, plain, warnings=warn.done())


class _Warnings:
    """Impossible values found while decoding, a few of each kind named and the rest counted (linear in size)."""

    SHOWN = 8

    def __init__(self, first: list[str]):
        self.lines = first
        self.counts: dict[str, int] = {}

    def add(self, kind: str, text: str) -> None:
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if n <= self.SHOWN:
            self.lines.append(text)

    def queue_state(self, where: str, ready: int, heads: list[int], nr_ports: int) -> None:
        if ready >> Q:
            self.add("ready", f"{where}: READY {ready:#010x} has bits above 15 set; the FIFO ABI has 16 queues")
        for p, head in enumerate(heads):
            if head >= nr_ports:
                self.add("head", f"{where}: head of queue {p} is port {head}, past the array's {nr_ports} ports")

    def done(self) -> list[str]:
        for kind, n in self.counts.items():
            if n > self.SHOWN:
                self.lines.append(f"... and {n - self.SHOWN} more like the above ({kind})")
        return self.lines
