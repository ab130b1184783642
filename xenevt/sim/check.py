"""``xenevt sim check``: every inconsistency a state file can hold, and what ``--repair`` does about each.

What is legitimately reachable is not an inconsistency: a closed port whose
word is still LINKED (Xen leaves it queued until the guest consumes it), a
drained queue's stale head, a stale tail whose word is no longer LINKED, a
pending event on a masked port.  What is reported is what no sequence of
whole hypercalls and whole upcalls leaves (each line names the domain, the
port or vCPU queue, and the field):

* the journal: an intent record or a raise left by a process killed mid-update;
* peers: an interdomain port whose other end does not point back;
* records against words: a bound port without an event word, PENDING on a closed
  port that no page re-raised, a closed record with stale fields (DEFERRED is
  not one: it is Xen's evtchn->pending, which outlives the channel);
* queues (per vCPU with no live consumer; a live one moves them under us): a
  LINKED word no head reaches (a lost event), events no READY bit announces, a
  local head naming a word not linked in its queue, a chain whose last LINK
  points out of it, a tail that is not the chain's end, READY with nothing queued;
* a consumer pid left by a consumer that is gone;
* on a domain that is on the 2-level ABI (its FIFO words and queues do not
  exist; while on FIFO its bitmaps are only what Xen left, so they are not
  judged): a pending bit on a port Xen has no channel for (port 0, or at or
  past ``valid_evtchns``); per vCPU with no live consumer, selector bits with
  ``evtchn_upcall_pending`` clear (Xen sets the upcall with each selector bit
  it sets, and Linux takes the selector only after clearing the upcall: only
  an upcall or a raise cut short leaves it), an upcall flag that is neither 0
  nor 1, and Linux's saved scan position past the bitmaps.

A pending, unmasked 2-level port whose selector bit or upcall flag is clear is
not reported: a guest mid-upcall shows it (the selector taken, the word not
scanned yet), and so does a port moved to another vCPU while pending (Xen
does not re-raise it; Linux re-raises it by unmasking).  Neither is a pending
bit on a closed port: Xen's switch to FIFO keeps the bitmaps and a reset does
not clear them, so a domain once on FIFO may show one.  A killed consumer's
vCPU gets its selector bits rebuilt all the same (``repair_vcpu_l2``).

A destroyed domain (``sim destroy``) is not an inconsistency either: gone, it
is not checked (its image is kept unused, a note says so); dying, its ports
are all closed; and ports of other domains left unbound waiting for it are
what Xen's evtchn_destroy() leaves.

A file ``statefile.check_file`` refuses is reported as its one line and cannot be repaired here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .. import abi
from ..abi import ECS_FREE, ECS_INTERDOMAIN, ECS_IPI, ECS_PIRQ, ECS_RESERVED, ECS_UNBOUND, ECS_VIRQ
from ..engine.layout import ABI_FIFO, CHAN_DEFERRED, L2_WORDS
from ..errors import StateError
from .statefile import KINDS, read_intent, read_raise

Q = abi.EVTCHN_FIFO_MAX_QUEUES
_STATE_NAMES = {ECS_FREE: "closed", ECS_RESERVED: "reserved", ECS_PIRQ: "bound to a PIRQ", ECS_VIRQ: "bound to a VIRQ",
                ECS_IPI: "bound to an IPI"}
_LINK = abi.EVTCHN_FIFO_LINK_MASK


@dataclass
class Finding:
    where: str  # "domain 0 port 5", "domain 1 vCPU 0 queue 7", "journal"
    field: str
    why: str
    repair: Callable[[], str] | None = field(default=None, repr=False)  # returns what it did

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
        gready, ghead, cready, chead = g[0], g[1 + prio], cb[0], cb[2 + prio]
    ready = bool((gready | cready) & (1 << prio))
    start = ghead if ghead else chead  # Linux continues from its local head, else takes the shared one
    chain, seen, port = [], set(), start
    while port in mine and port not in seen:
        chain.append(port)
        seen.add(port)
        port = mem.word(port) & _LINK
    return ghead, chead, chain, port, ready


def queue_findings(host, dom, vcpu: int, linked: dict[tuple[int, int], set[int]]) -> list[Finding]:
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
        fix = _once(lambda prio=prio: _repair_queue(host, dom, vcpu, prio))
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


def _repair_queue(host, dom, vcpu: int, prio: int) -> str:
    """Make one queue what whole hypercalls and upcalls leave: the live chain announced and ending at the tail,
    every LINKED word of the queue on it (a lost one is unlinked and raised again if still pending)."""
    mem = dom.mem
    mine = linked_ports(mem).get((vcpu, prio), set())
    done = []
    with mem.guest(vcpu) as g:
        if g[1 + prio] and g[1 + prio] not in mine:
            g[1 + prio] = 0
            done.append("cleared the local head")
    ghead, _, chain, after, ready = _queue_state(mem, vcpu, prio, mine)
    if chain and after:
        mem.set_word(chain[-1], mem.word(chain[-1]) & ~_LINK)
        done.append(f"ended the chain at port {chain[-1]}")
    lost = mine - set(chain)
    links = {p: mem.word(p) & _LINK for p in lost}
    for p in lost:
        mem.set_word(p, mem.word(p) & ~(abi.WORD_LINKED | _LINK))
    with mem.tails() as tails:
        tails[vcpu * Q + prio] = chain[-1] if chain else 0
    bit = 1 << prio
    if chain and not ready:
        if ghead:
            with mem.guest(vcpu) as g:
                g[0] |= bit
        else:
            with mem.control_block(vcpu) as cb:
                cb[0] |= bit
            host._kick(dom, vcpu)
        done.append("set READY")
    elif not chain and ready:
        with mem.guest(vcpu) as g, mem.control_block(vcpu) as cb:
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
        w = mem.word(p)
        if w & abi.WORD_PENDING and not w & abi.WORD_MASKED and mem.chan(p).state not in (ECS_FREE, ECS_RESERVED):
            host._raise(dom, p)
            raised.append(p)
    if lost:
        done.append(f"unlinked lost port(s) {', '.join(map(str, sorted(lost)))}"
                    + (f", raised {', '.join(map(str, raised))} again" if raised else ""))
    return f"domain {dom.domid} vCPU {vcpu} queue {prio}: " + ("; ".join(done) or "set the tail")


def repair_vcpu_queues(host, dom, vcpu: int) -> list[str]:
    """Recovery's part: mend every queue of the vCPU that needs it; returns what was done."""
    return [f.repair() for f in _dedupe(queue_findings(host, dom, vcpu, linked_ports(dom.mem))) if f.repair]


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


def repair_vcpu_l2(host, dom, vcpu: int) -> list[str]:
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
        host._l2_announce(dom, p)
    if words:
        done.append(f"announced selector word(s) {', '.join(map(str, sorted(words)))} again")
    up, _, sel = mem.vcpu_info(vcpu)
    if sel and not up:
        mem.buffer[at] = 1
        host._kick(dom, vcpu)
        done.append("set evtchn_upcall_pending")
    return [f"domain {dom.domid} vCPU {vcpu}: " + "; ".join(done)] if done else []


def l2_vcpu_findings(host, dom, vcpu: int) -> list[Finding]:
    """What no whole hypercall or upcall leaves in one vCPU's 2-level state (the module's docstring)."""
    mem, out = dom.mem, []
    where = f"domain {dom.domid} vCPU {vcpu}"
    fix = _once(lambda: "; ".join(repair_vcpu_l2(host, dom, vcpu)) or f"{where}: nothing left to do")
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
                out.append(Finding(f"domain {dom.domid} port {port}", "pending", "PENDING in shared_info's bitmap, "
                                   f"but Xen has no channel for the port (valid ports 1..{valid - 1})",
                                   lambda port=port: _clear_l2_pending(dom, port)))
    return out


def _clear_l2_pending(dom, port: int) -> str:
    with dom.mem.l2_pending() as pv:
        pv[port // L2_WORDS] &= ~(1 << port % L2_WORDS)
    return f"domain {dom.domid} port {port}: cleared its pending bit"


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen, out = set(), []
    for f in findings:
        if f.where not in seen:
            seen.add(f.where)
            out.append(f)
    return out


# --- the whole file ----------------------------------------------------------------------------------------
def host_findings(host) -> tuple[list[Finding], list[str]]:
    """Every inconsistency of an open host (the caller holds the host lock), and notes on what was not checked."""
    out: list[Finding] = []
    notes: list[str] = []
    intent = read_intent(host._mm, host._journal)
    mark = read_raise(host._mm, host._journal)

    def replay() -> str:
        host._recover()
        return "; ".join(host.recovered[-2:]) if host.recovered else "nothing left to redo"

    redo = _once(replay)
    if intent is not None:
        steps = ", ".join(KINDS.get(k, str(k)) for k, *_ in intent.entries)
        out.append(Finding("journal", "intent", f"{intent.op_name} by domain {intent.caller} (pid {intent.pid}) "
                           f"was cut short: {len(intent.entries)} step(s) to redo ({steps})", redo))
    if mark is not None:
        out.append(Finding("journal", "raise", f"a raise of port {mark[1]} of domain {mark[0]} was cut short", redo))
    for domid in sorted(host.gone):
        notes.append(f"domain {domid}: destroyed (gone): its image is kept unused and not checked")
    try:
        host.check_records()
    except StateError as e:  # a record no Xen could hold: nothing else can be judged until it is whole again
        return out + [Finding("state file", "channel", str(e))], notes
    for dom in host.domains.values():
        two_level = dom.mem.event_abi != ABI_FIFO
        out += _record_findings(host, dom, two_level)
        if two_level:
            out += l2_domain_findings(dom)
        linked = linked_ports(dom.mem)
        for v in range(dom.mem.nr_vcpus):
            pid = dom.mem.consumer(v)
            if host.consumer_live(dom.domid, v):
                what = "selector and upcall flag" if two_level else "queues"
                notes.append(f"domain {dom.domid} vCPU {v}: {what} not checked: a consumer (pid {pid}) is running")
                continue
            if pid:
                def clear(dom=dom, v=v, pid=pid, two_level=two_level) -> str:
                    mended = repair_vcpu_l2(host, dom, v) if two_level else []  # what it took (guest.py)
                    dom.mem.set_consumer(v, 0)
                    return "; ".join(mended + [f"domain {dom.domid} vCPU {v}: cleared consumer pid {pid}"])

                out.append(Finding(f"domain {dom.domid} vCPU {v}", "consumer", f"names pid {pid}, which holds no "
                                   "consumer lock (a consumer that is gone)", clear))
            out += l2_vcpu_findings(host, dom, v) if two_level else queue_findings(host, dom, v, linked)
    return out, notes


def _record_findings(host, dom, two_level: bool) -> list[Finding]:
    mem, out = dom.mem, []
    states = mem.chan_states(0, mem.nr_chans)
    for port in range(1, mem.nr_chans):
        state = states[port]
        where = f"domain {dom.domid} port {port}"
        if state in (ECS_FREE, ECS_RESERVED):
            if state == ECS_RESERVED:
                continue
            ch = mem.chan(port)
            word = mem.word(port)
            # (DEFERRED is Xen's evtchn->pending: it outlives the channel, and a page added later raises the
            # port again, closed or not)
            if (ch.priority, ch.flags & ~CHAN_DEFERRED, ch.notify_vcpu, ch.remote_dom, ch.aux, ch.remote_port) != \
                    (abi.EVTCHN_FIFO_PRIORITY_DEFAULT, 0, 0, 0, 0, 0):
                out.append(Finding(where, "channel", "a closed port's record keeps fields of its last binding "
                                   "(a close cut short)", lambda port=port: _clean_free(dom, port)))
            elif word is not None and word & abi.WORD_PENDING and not ch.flags & CHAN_DEFERRED:
                out.append(Finding(where, "word.pending", "PENDING on a closed port (Xen's close clears it)",
                                   lambda port=port: _clean_free(dom, port)))
            continue
        ch = mem.chan(port)
        word = mem.word(port)
        # (on 2-level there are no event words: every port below 4096 has its bits, and Xen binds none past it)
        if not two_level and word is None:
            out.append(Finding(where, "event_word", f"bound, but the event array has no word for it "
                               f"({mem.nr_ports} ports)", lambda port=port: _expand(host, dom, port)))
        if state == ECS_INTERDOMAIN:
            rdom = host.domains.get(ch.remote_dom)
            rch = rdom.mem.chan(ch.remote_port) if rdom is not None else None
            if rch is None or rch.state != ECS_INTERDOMAIN or (rch.remote_dom, rch.remote_port) != (dom.domid, port):
                if rch is None:
                    what = "which is not on this host"
                elif rch.state == ECS_INTERDOMAIN:
                    what = f"which is connected to port {rch.remote_port} of domain {rch.remote_dom}"
                elif rch.state == ECS_UNBOUND:
                    what = f"which is unbound (waiting for domain {rch.remote_dom})"
                else:
                    what = f"which is {_STATE_NAMES.get(rch.state, f'in state {rch.state}')}"
                out.append(Finding(where, "remote_port", f"names port {ch.remote_port} of domain {ch.remote_dom}, "
                                   f"{what}: the peers disagree", lambda port=port: _unbind(dom, port)))
    return out


def _clean_free(dom, port: int) -> str:
    from ..engine import Chan

    ch = dom.mem.chan(port)
    dom.mem.set_chan(port, Chan(last_priority=ch.last_priority, last_vcpu=ch.last_vcpu))
    dom.engine.clear_pending(port)
    return f"domain {dom.domid} port {port}: cleared the closed record and PENDING"


def _expand(host, dom, port: int) -> str:
    host._guest_setup(dom, port, dom.domid)
    return f"domain {dom.domid} port {port}: grew the event array to {dom.mem.nr_pages} page(s)"


def _unbind(dom, port: int) -> str:
    ch = dom.mem.chan(port)
    ch.state, ch.remote_port = ECS_UNBOUND, 0
    dom.mem.set_chan(port, ch)
    return f"domain {dom.domid} port {port}: unbound (waiting for domain {ch.remote_dom} again)"


def check_host(state_dir: str | None, repair: bool = False) -> tuple[list[str], list[str], list[str]]:
    """(inconsistencies found, repairs done, notes); with ``repair`` the file is mended under the host lock
    and checked again: the first list then holds what is left."""
    from .host import SimHost

    with SimHost(state_dir, read_only=not repair, recover=False, check_records=False) as host, \
            host.locked(check_only=True):
        found, notes = host_findings(host)
        lines = [f.line() for f in found]
        if not repair:
            return lines, [], notes
        done = []
        for f in found:
            if f.repair is not None:
                what = f.repair()
                if not what.startswith("(with the above"):
                    done.append(what)
        left, notes = host_findings(host)
        return [f.line() for f in left], done, notes
