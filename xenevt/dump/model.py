"""Decode one domain's event-channel memory: FIFO queues, chains and flagged event words, or 2-level bitmaps.

Nothing here writes to the memory: chains come from the engine's walker,
which follows LINK fields without touching a bit, bounded by an owner map
so that cycles and corrupted links end with a status instead of a hang; the
2-level upcall order comes from the engine's consume run on a copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from .. import abi
from ..engine import Consume, DomainMemory, Err, Walk, engine_for, twolevel_for
from ..engine.layout import ABI_FIFO, L2_WORDS
from ..ports import PortStatus

Q = abi.EVTCHN_FIFO_MAX_QUEUES

class PortNames(Protocol):
    """What a dump asks of its ports' names (evidence.names.Names: a layer above, handed in, never imported)."""

    @property
    def names(self) -> Mapping[tuple[int, int], object]: ...
    def field(self, domain: int, port: int) -> dict | None: ...
    def fields(self, domain: int, ports: Iterable[int]) -> list[dict | None]: ...
    def cell(self, domain: int, port: int) -> str: ...


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


_NO_NAME = object()  # (WordView.json_row without a name field)


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

    def as_dict(self) -> dict:
        wd = {"port": self.port, "word": f"{self.word:#010x}", "flags": self.flags, "pending": self.pending,
              "masked": self.masked, "linked": self.linked, "busy": self.busy, "link": self.link}
        if self.channel is not None:
            wd["channel"] = {k: v for k, v in self.channel.as_dict().items()
                             if k not in ("domain", "port", "word", "flags")}
        return wd

    def json_row(self, name=_NO_NAME) -> str:
        """``json.dumps(self.as_dict())`` (with ``"name": name`` last, when given), byte for byte, formatted
        directly (a dump's 20,000 words)."""
        b = _BOOL_JSON
        text = (f'{{"port": {self.port}, "word": "{self.word:#010x}", "flags": "{self.flags}", '
                f'"pending": {b[self.pending]}, "masked": {b[self.masked]}, "linked": {b[self.linked]}, '
                f'"busy": {b[self.busy]}, "link": {self.link}')
        if self.channel is not None:
            text += f', "channel": {self.channel.json_channel()}'
        if name is _NO_NAME:
            return text + "}"
        if name is None:
            return text + ', "name": null}'
        import json

        return text + f', "name": {json.dumps(name)}}}'


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
    names: PortNames | None = None  # evidence.names.Names of the shown ports, where the source's backend names them

    @property
    def nr_ports(self) -> int:
        return self.nr_pages * abi.EVENT_WORDS_PER_PAGE

    def broken_queues(self) -> list[QueueView]:
        return [q for v in self.vcpus for q in v.queues if q.broken]

    def as_dict(self, words: bool = True) -> dict:
        d: dict[str, Any] = {"domain": self.domain, "source": self.source, "abi": self.abi,
                             "event_array_pages": self.nr_pages,
             "ports_with_words": self.nr_ports, "max_ports": self.max_ports, "plain_masked_words": self.plain_masked,
             "warnings": list(self.warnings), "vcpus": [], "words": []}
        for v in self.vcpus:
            vd: dict[str, Any] = {"vcpu": v.vcpu, "control_block": v.control_block}
            if v.control_block:
                vd["ready"] = _bits(v.ready)
                vd["heads"] = {str(p): h for p, h in enumerate(v.heads) if h}
            if v.guest_heads is not None:
                vd["guest"] = {"ready": _bits(v.guest_ready or 0),
                               "heads": {str(p): h for p, h in enumerate(v.guest_heads) if h}}
            vd["queues"] = [_queue_dict(q) for q in v.queues]
            d["vcpus"].append(vd)
        if words:
            d["words"] = [w.as_dict() | {"name": self._name(w.port)} for w in self.words]
        return d

    def _name(self, port: int):
        return self.names.field(self.domain, port) if self.names is not None else None

    def json_chunks(self, chunk: int = 512):
        """``json.dumps(self.as_dict())`` in pieces, byte for byte: the head, then the words a few hundred rows
        at a time, each row formatted directly (WordView.json_row), not built as a dict and encoded."""
        import json

        head = json.dumps(self.as_dict(words=False))
        assert head.endswith('"words": []}')  # (words is the last key)
        yield head[:-2]
        words = self.words
        names = self.names.fields(self.domain, [w.port for w in words]) if self.names is not None else \
            [None] * len(words)
        rows = [w.json_row(name) for w, name in zip(words, names, strict=True)]
        for i in range(0, len(rows), chunk):
            yield ("" if i == 0 else ", ") + ", ".join(rows[i:i + chunk])
        yield "]}"


_BOOL_JSON = {True: "true", False: "false"}


def _queue_dict(q: QueueView) -> dict:
    """``asdict(q)`` without None and empty notes, plus ``broken``: a shallow copy (a chain of 20,000 ports is
    copied once, not deep-copied port by port)."""
    d = {f: getattr(q, f) for f in _QUEUE_FIELDS}
    d["chain"] = list(q.chain)
    return {k: v for k, v in d.items() if v is not None and v != ""} | {"broken": q.broken}


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


def abi_of(mem: DomainMemory) -> str:
    """"FIFO" or "2-level": the image's ABI word, but an image with event-array pages is FIFO whatever the
    word says (images written before the word existed, or by a test's writer, leave it at 2-level's 0)."""
    return "FIFO" if mem.event_abi == ABI_FIFO or mem.nr_pages else "2-level"


def build_dump(mem: DomainMemory, domain: int, source: str, *, channels: dict[int, PortStatus] | None = None,
               guest_known: bool = True, all_words: bool = False, max_ports: int | None = None,
               engine=None, vcpu_known: list[bool] | None = None, omit: dict[int, PortStatus] | None = None):
    """Decode ``mem``: a DomainDump (FIFO) or a TwoLevelDump.  ``guest_known``: the source holds Linux's
    local state (sim, kernel): FIFO walks start at its local heads, the 2-level upcall at its saved scan
    position; otherwise at the control blocks' heads, and at port 0.  ``vcpu_known`` (2-level): which
    vCPUs' vcpu_info was read (default: all).  ``omit`` (FIFO): statuses whose port's word, where it is the
    word the status was read with, is left out of ``words`` (doctor has their facts: 20,000 words not made)."""
    if abi_of(mem) == "2-level":
        return build_l2_dump(mem, domain, source, channels=channels, guest_known=guest_known,
                             all_words=all_words, max_ports=max_ports, vcpu_known=vcpu_known)
    engine = engine or engine_for(mem)
    nv = mem.nr_vcpus
    starts = None
    if guest_known:
        starts = [head for v in range(nv) for head in mem.guest(v)[1:1 + Q]]  # (each vCPU's heads read once)
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
    nr_ports = mem.nr_ports
    link_mask = abi.EVTCHN_FIFO_LINK_MASK
    all_of = mem.event_words()  # (one copy of the array: a host's 20,000 words)
    # the ports to look at: every one with all_words; else those with a channel, and those whose word is neither
    # 0 nor the boot default, found over the whole array at once (a domU's 1,024 idle words are not visited one
    # by one)
    if all_words:
        look = set(range(nr_ports))
    else:
        look = _unusual(all_of) | {p for p in channels if 0 <= p < nr_ports}
        plain = all_of.count(abi.WORD_MASKED) - sum(1 for p in channels if 0 <= p < nr_ports
                                                     and all_of[p] == abi.WORD_MASKED)
    unused, linked, pending, masked, busy = abi.WORD_UNUSED, abi.WORD_LINKED, abi.WORD_PENDING, abi.WORD_MASKED, \
        abi.WORD_BUSY
    for port in sorted(look):
        w = all_of[port]
        ch = channels.get(port)
        if w & unused:
            warn.add("unused", f"event word of port {port} is {w:#010x}: bits 17..27 set, which the ABI leaves unused")
        if w & linked and w & link_mask >= nr_ports:
            warn.add("link", f"event word of port {port} is LINKED to port {abi.word_link(w)}, past the array's "
                     f"{nr_ports} ports")
        if ch is not None and omit and omit.get(port) is ch and ch.word == w:
            continue
        words.append(WordView(port, w, bool(w & pending), bool(w & masked), bool(w & linked), bool(w & busy),
                              w & link_mask, ch))
    return DomainDump(domain, source, mem.nr_pages, max_ports, vcpus, words, plain, warnings=warn.done())


def _unusual(words: list[int]) -> set[int]:
    """The indexes of ``words`` that are neither 0 nor MASKED (the boot default): over the
    array's bytes at once (each byte column mapped to 0 or 1, the four ORed as one integer)."""
    import array

    raw = array.array("I", words).tobytes()  # little-endian words (layout.py refuses any other order)
    n = len(words)
    if not n:
        return set()
    low = raw[0::4], raw[1::4], raw[2::4]
    top = raw[3::4].translate(_TOP_PLAIN)
    mark = int.from_bytes(top, "little")
    for column in low:
        mark |= int.from_bytes(column.translate(_NONZERO), "little")
    flags = mark.to_bytes(n, "little")
    out, i = set(), flags.find(1)
    while i >= 0:
        out.add(i)
        i = flags.find(1, i + 1)
    return out


_NONZERO = bytes([0] + [1] * 255)
_TOP_PLAIN = bytes(0 if b in (0, abi.WORD_MASKED >> 24) else 1 for b in range(256))  # a top byte of 0 or MASKED's


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


_QUEUE_FIELDS = tuple(f.name for f in fields(QueueView))


# --- 2-level -------------------------------------------------------------------------------------------------
L2_WORD_BITS = 64  # xen_ulong_t of a 64-bit guest


@dataclass
class L2VcpuView:
    vcpu: int
    known: bool                          # its vcpu_info was read
    upcall_pending: int | None = None    # evtchn_upcall_pending
    upcall_mask: int | None = None       # evtchn_upcall_mask
    pending_sel: int | None = None       # evtchn_pending_sel: bit w set = word w of the bitmaps may hold events
    scan: tuple[int, int] | None = None  # Linux's (current_word_idx, current_bit_idx), where known
    next_upcall: list[int] | None = None  # the ports Linux's next upcall on this vCPU delivers, in order

    @property
    def selector_words(self) -> list[int]:
        return [w for w in range(L2_WORD_BITS) if (self.pending_sel or 0) >> w & 1]


@dataclass
class L2PortView:
    port: int
    pending: bool
    masked: bool
    vcpu: int | None                     # the vCPU it is delivered on (its channel, or Linux's CPU masks)
    selector: bool | None                # that vCPU's selector bit for the port's word, where known
    channel: PortStatus | None = None

    @property
    def flags(self) -> str:
        return ("P" if self.pending else "-") + ("M" if self.masked else "-") + \
            ("S" if self.selector else "-" if self.selector is False else "?")


@dataclass
class TwoLevelDump:
    domain: int
    source: str
    nr_ports: int                # ports the bitmaps cover for this domain (4096 for a 64-bit guest)
    max_ports: int | None
    vcpus: list[L2VcpuView]
    ports: list[L2PortView]
    plain_masked: int            # masked, not pending, no channel (Linux masks every port at boot): not shown
    guest_known: bool            # Linux's scan position was read: the upcall order is exact
    abi: str = "2-level"
    warnings: list[str] = field(default_factory=list)
    names: PortNames | None = None  # as DomainDump's

    def broken_queues(self) -> list:
        return []

    def as_dict(self) -> dict:
        d: dict[str, Any] = {"domain": self.domain, "source": self.source, "abi": self.abi,
                             "ports_with_bits": self.nr_ports,
             "max_ports": self.max_ports, "plain_masked_ports": self.plain_masked,
             "scan_position_known": self.guest_known, "warnings": list(self.warnings), "vcpus": [], "ports": []}
        for v in self.vcpus:
            vd: dict = {"vcpu": v.vcpu, "vcpu_info_known": v.known}
            if v.known:
                vd |= {"evtchn_upcall_pending": v.upcall_pending, "evtchn_upcall_mask": v.upcall_mask,
                       "evtchn_pending_sel": f"{v.pending_sel:#018x}", "selector_words": v.selector_words}
            if v.scan is not None:
                vd["scan"] = {"word": v.scan[0], "bit": v.scan[1]}
            if v.next_upcall is not None:
                vd["next_upcall"] = list(v.next_upcall)
            d["vcpus"].append(vd)
        for p in self.ports:
            pd = {"port": p.port, "flags": p.flags, "pending": p.pending, "masked": p.masked, "vcpu": p.vcpu,
                  "selector": p.selector}
            if p.channel is not None:
                pd["channel"] = {k: val for k, val in p.channel.as_dict().items()
                                 if k not in ("domain", "port", "word", "flags", "priority")}  # 2-level: none
            pd["name"] = self.names.field(self.domain, p.port) if self.names is not None else None
            d["ports"].append(pd)
        return d


def build_l2_dump(mem: DomainMemory, domain: int, source: str, *, channels: dict[int, PortStatus] | None = None,
                  guest_known: bool = True, all_words: bool = False, max_ports: int | None = None,
                  vcpu_known: list[bool] | None = None) -> TwoLevelDump:
    """Decode a 2-level image: each vCPU's vcpu_info, each port's pending and mask bits, and the order
    Linux's next upcall on each vCPU would deliver ports in (the engine's consume, run on a copy)."""
    nv = mem.nr_vcpus
    known = [True] * nv if vcpu_known is None else [bool(k) for k in vcpu_known[:nv]] + [False] * (nv - len(
        vcpu_known))
    channels = channels or {}
    nr = min(mem.nr_chans, abi.EVTCHN_2L_NR_CHANNELS)
    warn = _Warnings(list(mem.warnings))
    vcpus = []
    for v in range(nv):
        view = L2VcpuView(v, known[v])
        if known[v]:
            view.upcall_pending, view.upcall_mask, view.pending_sel = mem.vcpu_info(v)
            for name, value in (("evtchn_upcall_pending", view.upcall_pending),
                                ("evtchn_upcall_mask", view.upcall_mask)):
                if value > 1:
                    warn.add("vcpu_info", f"vCPU {v}: {name} is {value:#04x}; Xen and Linux write only 0 and 1")
        if guest_known:
            scan = mem.l2_scan(v)
            view.scan = (scan[0], scan[1])
            if scan[0] >= L2_WORDS or scan[1] >= L2_WORD_BITS:
                warn.add("scan", f"vCPU {v}: Linux's scan position is word {scan[0]} bit {scan[1]}; both run "
                         f"0..{L2_WORDS - 1}")
        vcpus.append(view)
    _predict(mem, vcpus, channels, guest_known)
    pending, mask = mem.l2_pending(), mem.l2_mask()
    ports, plain = [], 0
    if all_words:  # every port the bitmaps cover: a 2-level guest's bound ports are its unmasked ones
        candidates = list(range(nr))
    else:
        candidates = sorted({w * 64 + b for w in range(L2_WORDS) for b in range(64) if pending[w] >> b & 1}
                            | set(channels))
    masked_count = sum(bin(mask[w]).count("1") for w in range(L2_WORDS))
    for port in candidates:
        if port >= abi.EVTCHN_2L_NR_CHANNELS:
            continue
        p, m = mem.l2_bit("pending", port), mem.l2_bit("mask", port)
        ch = channels.get(port)
        if p and port >= nr:
            warn.add("range", f"pending bit of port {port} is set, past the domain's {nr} ports")
        if ch is not None:
            vcpu = ch.vcpu
        elif guest_known and port < mem.nr_chans:
            vcpu = mem.chan(port).notify_vcpu
        else:
            vcpu = None
        if vcpu is not None and not 0 <= vcpu < nv:
            vcpu = None  # bound to no CPU (Linux's masks) or to a vCPU the domain lacks
        sel = None
        if vcpu is not None and vcpus[vcpu].known:
            sel_word = vcpus[vcpu].pending_sel  # (read wherever known)
            sel = sel_word is not None and bool(sel_word >> (port // 64) & 1)
        ports.append(L2PortView(port, p, m, vcpu, sel, ch))
    shown_masked = sum(1 for x in ports if x.masked)
    plain = 0 if all_words else masked_count - shown_masked
    return TwoLevelDump(domain, source, nr, max_ports, vcpus, ports, plain, guest_known, warnings=warn.done())


def _predict(mem: DomainMemory, vcpus: list[L2VcpuView], channels: dict[int, PortStatus], guest_known: bool) -> None:
    """Each known vCPU's next upcall, as Linux's evtchn_2l_handle_events would run it: on a copy of the image
    (with ACK, as Linux clears each port's pending bit as it handles it), never on the source's memory."""
    copy = DomainMemory(bytearray(mem.snapshot()))
    for port, st in channels.items():
        if 0 <= port < copy.nr_chans:
            copy.update_chan(port, notify_vcpu=st.vcpu)
    engine = twolevel_for(copy)
    try:
        for v in vcpus:
            scan = copy.l2_scan(v.vcpu)
            if not guest_known:
                scan[0] = scan[1] = 0  # where Linux resumes is guest memory this source did not read
            if not v.known or scan[0] >= L2_WORDS or scan[1] >= L2_WORD_BITS:
                continue
            got, err = engine.consume(v.vcpu, Consume.ACK, abi.EVTCHN_2L_NR_CHANNELS)
            if err[0] == Err.OK:
                v.next_upcall = list(got)
    finally:
        engine.close()
