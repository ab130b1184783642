"""Memory into a dump: the walks and decoders that turn one domain's event-channel memory into model.py's views.

FIFO: each vCPU's control block and the queues the engine's walker follows (LINK fields read, never a bit
written, bounded by an owner map so that a cycle or a corrupted link ends with a status instead of a hang), then
the event words worth showing.  2-level: each vCPU's vcpu_info, each port's bits, and the order Linux's next
upcall would take (the engine's consume, run on a copy).  Impossible values become the dump's warnings.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from itertools import compress
from operator import and_, attrgetter, eq, is_, not_

from .. import abi
from ..engine import Consume, DomainMemory, Err, Walk, engine_for, twolevel_for
from ..engine.layout import ABI_FIFO, L2_WORDS
from ..ports import PortStatus
from .model import (
    L2_WORD_BITS,
    DomainDump,
    L2PortView,
    L2VcpuView,
    Q,
    QueueView,
    TwoLevelDump,
    VcpuView,
    WordView,
)


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
               engine=None, vcpu_known: list[bool] | None = None, omit: dict[int, PortStatus] | None = None,
               vcpu_states: list[str] | None = None):
    """Decode ``mem``: a DomainDump (FIFO) or a TwoLevelDump.  ``guest_known``: the source holds Linux's
    local state (sim, kernel): FIFO walks start at its local heads, the 2-level upcall at its saved scan
    position; otherwise at the control blocks' heads, and at port 0.  ``vcpu_known`` (2-level): which
    vCPUs' vcpu_info was read (default: all).  ``omit`` (FIFO): statuses whose port's word, where it is the
    word the status was read with, is left out of ``words`` (doctor has their facts: 20,000 words not made).
    ``vcpu_states`` (FIFO): each vCPU's state where the source knows it (EventImage.vcpu_states)."""
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
        if vcpu_states is not None and v < len(vcpu_states):
            view.state = vcpu_states[v]
        if cb is not None:
            view.ready = cb[0]
            view.heads = list(cb[2:18])
            warn.queue_state(f"vCPU {v} control block", view.ready, view.heads, mem.nr_ports)
        if guest_known:
            g = mem.guest(v)
            view.guest_ready, view.guest_heads = mem.guest_ready(v), list(g[1:17])
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
        look: Iterable[int] = range(nr_ports)
    else:
        # (the channels' ports sorted and cut to the array, their words compared, by C loops: a host's 20,000)
        keys = sorted(channels)
        inside = keys[bisect_left(keys, 0):bisect_left(keys, nr_ports)]
        word_of = all_of.__getitem__
        plain = all_of.count(abi.WORD_MASKED) - sum(map(abi.WORD_MASKED.__eq__, map(word_of, inside)))
        if omit:
            # a word left out below (its status, read with this very word, says it all) that is 0 or MASKED
            # has no warning to give either: not visited at all
            chans = list(map(channels.__getitem__, inside))
            said = map(and_, map(is_, chans, map(omit.get, inside)), map(eq, map(_WORD, chans), map(word_of, inside)))
            inside = list(compress(inside, map(not_, said)))
        look = sorted(_unusual(all_of).union(inside))
    unused, linked, pending, masked, busy = abi.WORD_UNUSED, abi.WORD_LINKED, abi.WORD_PENDING, abi.WORD_MASKED, \
        abi.WORD_BUSY
    for port in look:
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


_WORD = attrgetter("word")


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
