"""What a dump of one domain's event-channel memory is: FIFO queues, chains and flagged event words, or 2-level
bitmaps, each with its dict and JSON forms.

decode.py builds these from memory (the walks and decoders); render.py draws them; the front door returns them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from .. import abi
from ..engine import Walk
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
    state: str | None = None              # "online", "down", "never up" where the source knows (the simulator)


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


