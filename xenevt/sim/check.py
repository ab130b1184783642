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

from functools import partial
from typing import TYPE_CHECKING

from .. import abi
from ..abi import ECS_FREE, ECS_INTERDOMAIN, ECS_IPI, ECS_PIRQ, ECS_RESERVED, ECS_UNBOUND, ECS_VIRQ
from ..engine.layout import ABI_FIFO, CHAN_DEFERRED
from ..errors import StateError
from .domain import SimDomain
from .statefile import KINDS, read_intent, read_raise
from .vcpucheck import (
    Finding,
    _once,
    l2_domain_findings,
    l2_vcpu_findings,
    linked_ports,
    queue_findings,
    repair_vcpu_l2,
)

if TYPE_CHECKING:
    from .host import SimHost

_STATE_NAMES = {ECS_FREE: "closed", ECS_RESERVED: "reserved", ECS_PIRQ: "bound to a PIRQ", ECS_VIRQ: "bound to a VIRQ",
                ECS_IPI: "bound to an IPI"}


# --- the whole file ----------------------------------------------------------------------------------------
def host_findings(host: SimHost) -> tuple[list[Finding], list[str]]:
    """Every inconsistency of an open host (the caller holds the host lock), and notes on what was not checked."""
    out: list[Finding] = []
    notes: list[str] = []
    intent = read_intent(host.file.mm, host.file.journal)
    mark = read_raise(host.file.mm, host.file.journal)

    def replay() -> str:
        host.journal.recover()
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
        host.file.check_records()
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
            if host.consumers.live(dom.domid, v):
                what = "selector and upcall flag" if two_level else "queues"
                notes.append(f"domain {dom.domid} vCPU {v}: {what} not checked: a consumer (pid {pid}) is running")
                continue
            if pid:
                def clear(dom=dom, v=v, pid=pid, two_level=two_level) -> str:
                    mended = repair_vcpu_l2(host.effects, dom, v) if two_level else []  # what it took (guest.py)
                    dom.mem.set_consumer(v, 0)
                    return "; ".join(mended + [f"domain {dom.domid} vCPU {v}: cleared consumer pid {pid}"])

                out.append(Finding(f"domain {dom.domid} vCPU {v}", "consumer", f"names pid {pid}, which holds no "
                                   "consumer lock (a consumer that is gone)", clear))
            out += l2_vcpu_findings(host.effects, dom, v) if two_level else queue_findings(host.effects, dom, v, linked)
    return out, notes


def _record_findings(host: SimHost, dom: SimDomain, two_level: bool) -> list[Finding]:
    mem, out = dom.mem, []
    states = mem.chan_states(0, mem.nr_chans)
    for port in range(1, mem.nr_chans):
        state = states[port]
        where = f"d{dom.domid}:{port}"
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
                                   "(a close cut short)", partial(_clean_free, dom, port)))
            elif word is not None and word & abi.WORD_PENDING and not ch.flags & CHAN_DEFERRED:
                out.append(Finding(where, "word.pending", "PENDING on a closed port (Xen's close clears it)",
                                   partial(_clean_free, dom, port)))
            continue
        ch = mem.chan(port)
        word = mem.word(port)
        # (on 2-level there are no event words: every port below 4096 has its bits, and Xen binds none past it)
        if not two_level and word is None:
            out.append(Finding(where, "event_word", f"bound, but the event array has no word for it "
                               f"({mem.nr_ports} ports)", partial(_expand, host, dom, port)))
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
                                   f"{what}: the peers disagree", partial(_unbind, dom, port)))
    return out


def _clean_free(dom, port: int) -> str:
    from ..engine import Chan

    ch = dom.mem.chan(port)
    dom.mem.set_chan(port, Chan(last_priority=ch.last_priority, last_vcpu=ch.last_vcpu))
    dom.engine.clear_pending(port)
    return f"d{dom.domid}:{port}: cleared the closed record and PENDING"


def _expand(host: SimHost, dom: SimDomain, port: int) -> str:
    host.binds.guest_setup(dom, port, dom.domid)
    return f"d{dom.domid}:{port}: grew the event array to {dom.mem.nr_pages} page(s)"


def _unbind(dom, port: int) -> str:
    ch = dom.mem.chan(port)
    ch.state, ch.remote_port = ECS_UNBOUND, 0
    dom.mem.set_chan(port, ch)
    return f"d{dom.domid}:{port}: unbound (waiting for domain {ch.remote_dom} again)"


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
