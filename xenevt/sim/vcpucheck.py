"""What a vCPU's events can be left as when its consumer or a raise is cut short, and the repair of each.

``sim check`` (check.py) reports these per vCPU with no live consumer; recovery (consumers.Consumers.repair_vcpu)
mends them: on FIFO the queues (a LINKED word no head reaches, events no READY bit announces, a stale local head,
a chain ending out of it, a wrong tail, READY with nothing queued), on 2-level the selector bits, the upcall flag
and Linux's saved scan position.  Each repair says what it did, in one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from .. import abi
from ..abi import ECS_FREE, ECS_RESERVED
from ..engine.layout import GUEST_READY_BITS, L2_WORDS
from .domain import SimDomain

if TYPE_CHECKING:  # (loaded by recovery only: the effects are the caller's)
    from .effects import Effects

Q = abi.EVTCHN_FIFO_MAX_QUEUES
_LINK = abi.EVTCHN_FIFO_LINK_MASK


@dataclass
class Finding:
    where: str  # "domain 0 port 5", "domain 1 vCPU 0 queue 7", "journal"
    field: str
    why: str
    repair: Callable[[], str] | None = dataclasses.field(default=None, repr=False)  # returns what it did

    def line(self) -> str:
        return f"{self.where}: {self.field}: {self.why}"


def _once(fn: Callable[[], str]) -> Callable[[], str]:
    """A repair shared by several findings (one queue's) runs once; later calls say so."""
    done: list[str] = []

    def run() -> str:
        if done:
            return f"(with the above: {done[0]})"
        done.append(fn())
        return done[0]

    return run


# --- queues -------------------------------------------------------------------------------------------------
def linked_ports(mem) -> dict[tuple[int, int], set[int]]:
    """LINKED words of channel ports, by the queue their channel last linked them into (last_vcpu, last_priority:
    the engine records it when it links)."""
    out: dict[tuple[int, int], set[int]] = {}
    limit = min(mem.nr_ports, mem.nr_chans)
    for page in range(mem.nr_pages):
        first = page * abi.EVENT_WORDS_PER_PAGE
        if first >= limit:
            break
        with mem.page_words(page) as view:
            words = view.tolist()
        for i, w in enumerate(words):
            port = first + i
            if w & abi.WORD_LINKED and 0 < port < limit:
                ch = mem.chan(port)
                out.setdefault((ch.last_vcpu, ch.last_priority), set()).add(port)
    return out


def _queue_state(mem, vcpu: int, prio: int, mine: set[int]):
    """(local head, head, chain from the live start, the port the last LINK names, ready) of one queue."""
    with mem.guest(vcpu) as g, mem.control_block(vcpu) as cb:
        gready, ghead, cready, chead = g[0] & GUEST_READY_BITS, g[1 + prio], cb[0], cb[2 + prio]
    ready = bool((gready | cready) & (1 << prio))
    start = ghead if ghead else chead  # Linux continues from its local head, else takes the shared one
    chain, seen, port = [], set(), start
    while port in mine and port not in seen:
        chain.append(port)
        seen.add(port)
        port = mem.word(port) & _LINK
    return ghead, chead, chain, port, ready


def queue_findings(effects: Effects, dom: SimDomain, vcpu: int,
                   linked: dict[tuple[int, int], set[int]]) -> list[Finding]:
    mem = dom.mem
    if mem.control_block(vcpu) is None:
        return []
    out: list[Finding] = []
    owner = {p: q for q, ports in linked.items() for p in ports}
    with mem.tails() as view:
        tails = view.tolist()
    for prio in range(Q):
        mine = linked.get((vcpu, prio), set())
        ghead, chead, chain, after, ready = _queue_state(mem, vcpu, prio, mine)
        where = f"domain {dom.domid} vCPU {vcpu} queue {prio}"
        fix = _once(partial(_repair_queue, effects, dom, vcpu, prio))
        found: list[Finding] = []
        if ghead and ghead not in mine:
            found.append(Finding(where, "local_head", f"the guest's local head names port {ghead}, which is not "
                                 "linked in this queue (a consumer killed mid-batch)", fix))
        if chain and after:
            found.append(Finding(where, f"word[{chain[-1]}].link", f"the chain's last word links to port {after}, "
                                 "which is not linked in this queue" + (" (a cycle)" if after in chain else ""), fix))
        for p in sorted(mine - set(chain)):
            found.append(Finding(where, f"word[{p}]", f"port {p} is LINKED but no head reaches it (its event is "
                                 "lost)", fix))
        if chain and not ready:
            found.append(Finding(where, "ready", f"{len(chain)} event(s) from port {chain[0]} on, but no READY bit "
                                 "(shared or the guest's local) announces them", fix))
        if not chain and ready:
            found.append(Finding(where, "ready", f"READY is set but nothing is queued (the head names port "
                                 f"{ghead or chead})", fix))
        tail = tails[vcpu * Q + prio]
        if chain and tail != chain[-1]:
            found.append(Finding(where, "tail", f"Xen's tail names port {tail}, but the queue ends at port "
                                 f"{chain[-1]}", fix))
        elif not chain and tail and owner.get(tail, (vcpu, prio)) != (vcpu, prio):
            q = owner[tail]
            found.append(Finding(where, "tail", f"Xen's tail names port {tail}, linked in queue {q[1]} of vCPU "
                                 f"{q[0]} (the next event here would join that chain)", fix))
        out += found
    return out


def _repair_queue(effects: Effects, dom: SimDomain, vcpu: int, prio: int) -> str:
    """Make one queue what whole hypercalls and upcalls leave: the live chain announced and ending at the tail,
    every LINKED word of the queue on it (a lost one is unlinked and raised again if still pending)."""
    mem = dom.mem
    mine = linked_ports(mem).get((vcpu, prio), set())
    done = []

    def word(port: int) -> int:  # (every port here is one the queue's walk found a word for)
        w = mem.word(port)
        if w is None:
            raise ValueError(f"d{dom.domid}:{port}: no event word")
        return w

    def control_block() -> memoryview:
        cb = mem.control_block(vcpu)
        if cb is None:
            raise ValueError(f"domain {dom.domid} vCPU {vcpu}: no control block")
        return cb

    with mem.guest(vcpu) as g:
        if g[1 + prio] and g[1 + prio] not in mine:
            g[1 + prio] = 0
            done.append("cleared the local head")
    ghead, _, chain, after, ready = _queue_state(mem, vcpu, prio, mine)
    if chain and after:
        mem.set_word(chain[-1], word(chain[-1]) & ~_LINK)
        done.append(f"ended the chain at port {chain[-1]}")
    lost = mine - set(chain)
    links = {p: word(p) & _LINK for p in lost}
    for p in lost:
        mem.set_word(p, word(p) & ~(abi.WORD_LINKED | _LINK))
    with mem.tails() as tails:
        tails[vcpu * Q + prio] = chain[-1] if chain else 0
    bit = 1 << prio
    if chain and not ready:
        if ghead:
            with mem.guest(vcpu) as g:
                g[0] |= bit
        else:
            with control_block() as cb:
                cb[0] |= bit
            effects.kick(dom, vcpu)
        done.append("set READY")
    elif not chain and ready:
        with mem.guest(vcpu) as g, control_block() as cb:
            g[0] &= ~bit
            cb[0] &= ~bit
        done.append("cleared READY")
    # the lost words again, in their old chain order: the pending ones are linked anew
    pointed = set(links.values())
    order, seen = [], set()
    for root in sorted(p for p in lost if p not in pointed) + sorted(lost):
        p = root
        while p in lost and p not in seen:
            seen.add(p)
            order.append(p)
            p = links[p]
    raised = []
    for p in order:
        w = word(p)
        if w & abi.WORD_PENDING and not w & abi.WORD_MASKED and mem.chan(p).state not in (ECS_FREE, ECS_RESERVED):
            effects.raise_event(dom, p)
            raised.append(p)
    if lost:
        done.append(f"unlinked lost port(s) {', '.join(map(str, sorted(lost)))}"
                    + (f", raised {', '.join(map(str, raised))} again" if raised else ""))
    return f"domain {dom.domid} vCPU {vcpu} queue {prio}: " + ("; ".join(done) or "set the tail")


def repair_vcpu_queues(effects: Effects, dom: SimDomain, vcpu: int) -> list[str]:
    """Recovery's part: mend every queue of the vCPU that needs it; returns what was done."""
    return [f.repair() for f in _dedupe(queue_findings(effects, dom, vcpu, linked_ports(dom.mem))) if f.repair]


# --- 2-level -------------------------------------------------------------------------------------------------
def _l2_active(dom, vcpu: int) -> list[int]:
    """Ports Linux's scan on ``vcpu`` would deliver: pending, unmasked, bound to the vCPU (active_evtchns())."""
    mem = dom.mem
    limit = min(mem.nr_chans, abi.EVTCHN_2L_NR_CHANNELS)
    with mem.l2_pending() as pv, mem.l2_mask() as mv:
        cand = [(w, pv[w] & ~mv[w]) for w in range(L2_WORDS)]
    out = []
    for w, bits in cand:
        while bits:
            bit = (bits & -bits).bit_length() - 1
            bits &= bits - 1
            port = w * L2_WORDS + bit
            if port < limit and mem.chan(port).notify_vcpu == vcpu:
                out.append(port)
    return out


def repair_vcpu_l2(effects: Effects, dom: SimDomain, vcpu: int) -> list[str]:
    """Recovery's part on 2-level (a consumer or a raise cut short, guest.py's docstring): the saved scan position
    back in range, each word holding a port the vCPU's scan would deliver announced in the selector again, and
    the upcall flag set (with a kick) wherever a selector bit is; returns what was done."""
    mem, done = dom.mem, []
    with mem.l2_scan(vcpu) as scan:
        if scan[0] >= L2_WORDS or scan[1] >= L2_WORDS:
            done.append(f"reset the scan position (word {scan[0]}, bit {scan[1]}) to word 0, bit 0")
            scan[0] = scan[1] = 0
    at = mem.geometry.vcpu_info_offset(vcpu)
    if mem.buffer[at] > 1:
        done.append(f"set evtchn_upcall_pending {mem.buffer[at]:#x} to 1")
        mem.buffer[at] = 1
    sel = mem.vcpu_info(vcpu)[2]
    words: dict[int, int] = {}  # word -> a port in it to announce again
    for p in _l2_active(dom, vcpu):
        if not sel >> (p // L2_WORDS) & 1:
            words.setdefault(p // L2_WORDS, p)
    for p in words.values():
        effects.l2_announce(dom, p)
    if words:
        done.append(f"announced selector word(s) {', '.join(map(str, sorted(words)))} again")
    up, _, sel = mem.vcpu_info(vcpu)
    if sel and not up:
        mem.buffer[at] = 1
        effects.kick(dom, vcpu)
        done.append("set evtchn_upcall_pending")
    return [f"domain {dom.domid} vCPU {vcpu}: " + "; ".join(done)] if done else []


def l2_vcpu_findings(effects: Effects, dom: SimDomain, vcpu: int) -> list[Finding]:
    """What no whole hypercall or upcall leaves in one vCPU's 2-level state (the module's docstring)."""
    mem, out = dom.mem, []
    where = f"domain {dom.domid} vCPU {vcpu}"
    fix = _once(lambda: "; ".join(repair_vcpu_l2(effects, dom, vcpu)) or f"{where}: nothing left to do")
    up, _, sel = mem.vcpu_info(vcpu)
    with mem.l2_scan(vcpu) as scan:
        word, bit = scan[0], scan[1]
    if word >= L2_WORDS or bit >= L2_WORDS:
        out.append(Finding(where, "scan", f"Linux's saved scan position (word {word}, bit {bit}) is past the "
                           f"{L2_WORDS}x{L2_WORDS} bitmaps", fix))
    if up > 1:
        out.append(Finding(where, "evtchn_upcall_pending", f"{up:#x}: Xen and Linux only ever store 0 or 1", fix))
    elif sel and not up:
        out.append(Finding(where, "evtchn_pending_sel", f"selector bits {sel:#x} but evtchn_upcall_pending is clear: "
                           "the guest will not look (an upcall or a raise cut short)", fix))
    return out


def l2_domain_findings(dom) -> list[Finding]:
    """Pending bits of ports Xen has no channel for (port 0; valid_evtchns and up): Xen never sets them."""
    mem, out = dom.mem, []
    valid = min(mem.valid_ports, abi.EVTCHN_2L_NR_CHANNELS)
    with mem.l2_pending() as pv:
        words = pv.tolist()
    for w, bits in enumerate(words):
        while bits:
            bit = (bits & -bits).bit_length() - 1
            bits &= bits - 1
            port = w * L2_WORDS + bit
            if port == 0 or port >= valid:
                out.append(Finding(f"d{dom.domid}:{port}", "pending", "PENDING in shared_info's bitmap, "
                                   f"but Xen has no channel for the port (valid ports 1..{valid - 1})",
                                   partial(_clear_l2_pending, dom, port)))
    return out


def _clear_l2_pending(dom, port: int) -> str:
    with dom.mem.l2_pending() as pv:
        pv[port // L2_WORDS] &= ~(1 << port % L2_WORDS)
    return f"d{dom.domid}:{port}: cleared its pending bit"


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen, out = set(), []
    for f in findings:
        if f.where not in seen:
            seen.add(f.where)
            out.append(f)
    return out
