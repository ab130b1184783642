"""What Xen does to a domain's event-channel memory, each step restartable: the journal's entries and what they do.

Every change of more than one word is a list of journal entries (statefile.K_*) that ``Effects.apply`` carries
out, on the normal path (journal.Journal.transact) and in the replay after a kill alike; each step may run again
after a partial run.  Who may ask, and Xen's checks, are the hypercalls' (hypercalls.py, binds.py); the guest
kernel's own acts on its words (mask, the unmask it makes after a bind, the 2-level selector it mends) are here
where Xen's steps need them.
"""

from __future__ import annotations

import os
import struct

from .. import abi
from ..abi import ECS_FREE, ECS_INTERDOMAIN, ECS_UNBOUND
from ..engine import Chan, faults
from ..engine.codes import SP, engine_error
from ..engine.layout import ABI_FIFO, CHAN, CHAN_DEFERRED, CHAN_FIELDS, CHAN_XEN, FREES_WORD, HEADER_FIELDS
from ..ports import chan_is_open
from . import hot
from .domain import SimDomain, kernel_boot
from .statefile import (
    HEADER,
    K_CHAN,
    K_CLOSE_WORD,
    K_CONTROL,
    K_DESTROY,
    K_ENABLE,
    K_FREES,
    K_PAGE,
    K_RAISE,
    K_RESET,
    K_VCPU,
    RAISE,
    RESET_CLOSE,
    RESET_SWITCH,
    VERSION,
)
from .stats import Stats
from .store import HostFile

Entry = tuple[int, int, int, bytes]  # a journal entry: kind, domain, index, value (statefile.ENTRY)
# XENEVT_SIM_BREAK=<rule>: one rule deliberately wrong, so the differential scenarios (tests/scenarios) are seen
# to catch it.  Rules: close-peer (closing an interdomain end leaves the peer interdomain), unmask-no-raise
# (EVTCHNOP_unmask clears the mask but does not raise a pending event).
SIM_BREAK = "XENEVT_SIM_BREAK"


def image(chan: Chan) -> bytes:
    """A channel record's bytes, as a journal entry carries it."""
    return CHAN.pack(chan.state, chan.priority, chan.last_priority, chan.flags, chan.notify_vcpu, chan.last_vcpu,
                     chan.remote_dom, chan.aux, chan.remote_port)


class Effects:
    """Xen's steps over the open ``file``, counted in ``stats``."""

    def __init__(self, file: HostFile, stats: Stats):
        self.file = file
        self.stats = stats

    def raise_event(self, dom: SimDomain, port: int, unmask: bool = False) -> int:
        """Xen's evtchn_port_set_pending (or the unmask hypercall) plus the vCPU kick.

        The engine links the port in several stores; the journal's raise mark (three word stores, the only
        cost the hot path pays) tells the next lock holder which queue a process killed in between left.
        """
        mem = dom.mem  # evtchn_port_set_pending(): a port Xen consumes is not the guest's (one byte read)
        if 0 < port < mem.nr_chans and mem.buffer[mem.geometry.chans_offset + port * CHAN.size + 3] & CHAN_XEN:
            return 0
        jw = self.file.jw
        jw[RAISE // 4 + 1] = port
        jw[RAISE // 4] = dom.domid + 1
        try:
            if self.file.crash_sleep:
                self.file.crash_point()
            engine = dom.engine if dom.mem.event_abi == ABI_FIFO else dom.l2
            rc = engine.unmask(port) if unmask else engine.set_pending(port)
        finally:
            jw[RAISE // 4] = 0
        if rc < 0:
            raise engine_error(rc, "raise", dom.domid, port, refused=True)
        if not unmask and not rc & SP.NO_CONTROL:  # (dropped for want of a control block: never raised to the
            self.stats.count(dom.domid, port, 0)    # guest; vcpu-without-control-block says so while it lasts)
        if rc & SP.UPCALL:
            self.kick(dom, self.file.rec(dom, port).notify_vcpu)
        return rc

    def kick(self, dom: SimDomain, vcpu: int) -> None:
        """vcpu_mark_events_pending(): vcpu_info's evtchn_upcall_pending set (on either ABI: real Xen shows it
        after a FIFO domain resets to 2-level), the simulator's upcall word bumped and its sleepers woken."""
        mem = dom.mem
        if mem.geometry.version >= 2 and 0 <= vcpu < mem.nr_vcpus:
            mem.buffer[mem.geometry.vcpu_info_offset(vcpu)] = 1
        if 0 <= vcpu < mem.nr_vcpus:
            hot.kick_word(self.file.upcall_word(dom, vcpu))  # bumped; a futex wake only if a consumer sleeps on it

    def close_word(self, dom: SimDomain, port: int) -> None:
        """Linux masks the port before closing it (a bare domain has no Linux); Xen's evtchn_close() clears
        PENDING (and DEFERRED) through the domain's ABI."""
        if dom.mem.event_abi != ABI_FIFO:
            if not dom.bare:
                dom.l2.guest_mask(port)
            if not faults.on(faults.CLOSE_KEEPS_PENDING):
                dom.l2.clear_pending(port)
            return
        if dom.mem.word(port) is not None and not dom.bare:
            dom.engine.guest_mask(port)
        dom.engine.clear_pending(port)

    def guest_enable(self, dom: SimDomain, port: int) -> None:
        """The guest kernel unmasks a port it just bound (Linux's unmask: locally, or EVTCHNOP_unmask when the
        port is pending)."""
        if dom.mem.event_abi == ABI_FIFO:
            if dom.mem.word(port) is not None and dom.engine.guest_unmask(port) == 0:
                self.raise_event(dom, port, unmask=True)
            return
        rc = dom.l2.guest_unmask(port)
        if rc == 0:
            self.raise_event(dom, port, unmask=True)
        elif rc > 0 and rc & SP.UPCALL:
            self.kick(dom, self.file.rec(dom, port).notify_vcpu)

    def l2_announce(self, dom: SimDomain, port: int) -> bool:
        """A pending, unmasked 2-level port gets its selector bit and the upcall again (and the vCPU a kick), as
        Linux's own unmask of it does: what a raise or an upcall cut short by a kill may have left undone.
        The selector bit is set by the engine's atomic unmask (Linux's evtchn_2l_unmask; a consumer may be
        taking the selector meanwhile), the upcall by a store of 1 (what Xen's test-and-set leaves).  A mask
        the guest sets on the port at that very instant is undone: the one race left, as on Linux.
        Returns whether the port needed it."""
        l2 = dom.l2
        if l2.is_pending(port) != 1 or l2.is_masked(port) != 0:
            return False
        vcpu = dom.mem.chan(port).notify_vcpu
        if l2.guest_unmask(port) < 0:
            return False
        dom.mem.buffer[dom.mem.geometry.vcpu_info_offset(vcpu)] = 1
        self.kick(dom, vcpu)
        return True

    @staticmethod
    def guest_mask(dom: SimDomain, port: int) -> None:
        """The guest's mask on the ABI it is on (one atomic store: no hypercall on either)."""
        (dom.engine if dom.mem.event_abi == ABI_FIFO else dom.l2).guest_mask(port)

    def control_block(self, dom: SimDomain, vcpu: int, offset: int) -> None:
        """EVTCHNOP_init_control, redone: the first control block moves the domain to FIFO (Xen's setup_ports():
        each valid port below 2-level's limit keeps a 2-level pending bit as a deferred event and gets the
        default priority), then the vCPU's block is registered."""
        mem = dom.mem
        if mem.event_abi != ABI_FIFO:
            for port in range(1, min(mem.valid_ports, abi.EVTCHN_2L_NR_CHANNELS)):
                ch = mem.chan(port)
                flags = ch.flags | CHAN_DEFERRED if dom.l2.is_pending(port) > 0 else ch.flags
                if (ch.flags, ch.priority) != (flags, abi.EVTCHN_FIFO_PRIORITY_DEFAULT):
                    mem.update_chan(port, flags=flags, priority=abi.EVTCHN_FIFO_PRIORITY_DEFAULT)
            mem.set_event_abi(ABI_FIFO)
        if mem.cb_offset(vcpu) != offset:
            mem.register_control_block(vcpu, offset)
        dom.engine.refresh()

    def page(self, dom: SimDomain, index: int) -> None:
        """EVTCHNOP_expand_array, redone: the page filled MASKED and counted, engines told, deferred events raised."""
        mem = dom.mem
        if mem.nr_pages == index:
            mem.add_page()
        elif mem.nr_pages > index:  # added before a kill: make every engine re-read the layout anyway
            at = HEADER_FIELDS["generation"]
            struct.pack_into("<I", mem.buffer, at, (struct.unpack_from("<I", mem.buffer, at)[0] + 1) & 0xFFFFFFFF)
        else:
            return
        dom.engine.refresh()
        # add_page_to_event_array(): each valid port of the new page whose evtchn->pending (DEFERRED) is set is
        # raised again, closed or not; each raise kicks only the vCPU whose READY bit it newly set
        first = index * abi.EVENT_WORDS_PER_PAGE
        last = min(first + abi.EVENT_WORDS_PER_PAGE, mem.nr_chans, mem.valid_ports)
        if last <= first:
            return
        at = mem.geometry.chans_offset + CHAN_FIELDS["flags"]
        flags = mem.buffer[at + first * CHAN.size: at + last * CHAN.size: CHAN.size].tobytes()
        for i, f in enumerate(flags):
            if f & CHAN_DEFERRED and first + i:
                self.raise_event(dom, first + i)

    def vcpu_state(self, dom: SimDomain, vcpu: int, state: int) -> None:
        """VCPUOP_down / VCPUOP_up, redone: the file made version 4 first (statefile.VERSIONS: an older xenevt then
        refuses it), the state byte stored, and whoever sleeps on the vCPU's upcall word woken to see it.  Nothing
        else: Xen keeps the vCPU's control block and queues, and events still link on them while it is down."""
        struct.pack_into("<I", self.file.mm, 8, VERSION)
        assert HEADER.unpack_from(self.file.mm, 0)[1] == VERSION
        dom.mem.set_vcpu_state(vcpu, state)
        hot.kick_word(self.file.upcall_word(dom, vcpu))

    def frees_entry(self, dom: SimDomain) -> tuple[int, int, int, bytes]:
        """The freed-channels count one higher: any process's lowest-free-port hint above a freed port is stale."""
        return (K_FREES, dom.domid, 0, struct.pack("<I12x", (dom.mem.frees + 1) & 0xFFFFFFFF))

    def close_entries(self, dom: SimDomain, port: int, ch: Chan) -> list[tuple[int, int, int, bytes]]:
        """evtchn_close(): the other end of an interdomain channel goes back to unbound (waiting for this
        domain) if it still points here; the word is masked and cleared; the record freed, lastq kept."""
        out = []
        if ch.state == ECS_INTERDOMAIN and os.environ.get(SIM_BREAK) != "close-peer":
            rdom = self.file.domains.get(ch.remote_dom)
            if rdom is not None and 0 < ch.remote_port < rdom.mem.nr_chans:  # (a redone reset may meet a torn one)
                rch = rdom.mem.chan(ch.remote_port)
                if rch.state == ECS_INTERDOMAIN and (rch.remote_dom, rch.remote_port) == (dom.domid, port):
                    out.append((K_CHAN, rdom.domid, ch.remote_port,
                                image(Chan(state=ECS_UNBOUND, priority=rch.priority, flags=rch.flags,
                                                 notify_vcpu=rch.notify_vcpu, remote_dom=dom.domid))))
        out.append((K_CLOSE_WORD, dom.domid, port, b""))
        out.append((K_CHAN, dom.domid, port, image(Chan(flags=ch.flags & CHAN_DEFERRED))))  # (sticky)
        out.append(self.frees_entry(dom))
        return out

    def reset_all(self, dom: SimDomain, part: int = 0) -> None:
        """EVTCHNOP_reset, restartable: close what is still open, then make every free record and word clean
        (a close cut short by a kill may have left a record half written).  Ports Xen consumes stay: the
        guest's evtchn_close() refuses them.  ``part``: only the closing (RESET_CLOSE) or only the rest
        (RESET_SWITCH), each restartable alone."""
        if part != RESET_SWITCH:
            self.close_all(dom, xen_too=False)
        if part == RESET_CLOSE:
            self.apply([self.frees_entry(dom)])
            return
        self.fifo_destroy(dom)
        self.clean_free(dom)

    def close_all(self, dom: SimDomain, xen_too: bool) -> None:
        """evtchn_close() of every open port (Xen's own ones too for ``xen_too``: evtchn_destroy), each peer
        sent back to unbound; restartable, the frees count left to the caller."""
        mem = dom.mem
        for port in dom.open_ports():
            self.file.crash_point()
            ch = mem.chan(port)  # unchecked: a close cut short may have left it half written
            if ch.flags & CHAN_XEN and not xen_too:
                continue
            for kind, domid, index, value in self.close_entries(dom, port, ch):
                if kind != K_FREES:
                    self.apply([(kind, domid, index, value)])

    def destroy_all(self, dom: SimDomain, dying: bool) -> None:
        """evtchn_destroy() for domain_kill(), restartable: every port closed (so each interdomain peer goes
        back to unbound, waiting for this domid), the FIFO control blocks and array let go (no kernel sets
        anything up again), and the domain table flag stored last.  Gone, the domain leaves ``domains``."""
        self.close_all(dom, xen_too=True)
        if dom.mem.event_abi == ABI_FIFO:
            dom.mem.fifo_teardown()
        dom.engine.refresh()
        self.clean_free(dom)
        dom.set_destroyed(dying)
        if not dying and dom.domid in self.file.domains:
            self.file.gone[dom.domid] = self.file.domains.pop(dom.domid)
            self.file.nr_chans.pop(dom.domid, None)

    def clean_free(self, dom: SimDomain) -> None:
        """Every free record and word of the domain clean, and its frees count bumped (any hint is stale)."""
        mem = dom.mem
        clean = Chan()
        for port in range(1, mem.nr_chans):
            ch = mem.chan(port)
            if ch.state == ECS_FREE:
                if (ch.priority, ch.flags & ~CHAN_DEFERRED, ch.notify_vcpu, ch.remote_dom, ch.aux,
                        ch.remote_port) != (clean.priority, 0, 0, 0, 0, 0):
                    mem.set_chan(port, Chan(last_priority=ch.last_priority, last_vcpu=ch.last_vcpu,
                                            flags=ch.flags & CHAN_DEFERRED))
                word = mem.word(port)
                if word is not None and word & abi.WORD_PENDING:
                    dom.engine.clear_pending(port)
        self.apply([self.frees_entry(dom)])

    def fifo_destroy(self, dom: SimDomain) -> None:
        """evtchn_fifo_destroy() + evtchn_2l_init(): control blocks and event array let go, back on 2-level
        (shared_info's bitmaps were never touched while on FIFO: they keep what they held).

        A simulated Linux guest then sets its event channels up again, as the kernel that follows a reset
        (kexec, a soft reset) does at boot, on the ABI its kernel chose (domain.kernel_boot): FIFO, a control
        block per vCPU and one MASKED array page; 2-level, every port masked.  A bare domain (a test guest's
        raw view) stays as Xen left it.  Both steps may run again after a kill."""
        mem = dom.mem
        if mem.event_abi == ABI_FIFO:
            mem.fifo_teardown()
        if not dom.bare:
            kernel_boot(mem, dom.kernel_2l)
        dom.engine.refresh()

    def apply(self, entries: list[Entry]) -> None:
        """Apply intent entries in order; the normal path and the replay are this one function, and every
        entry may run again after a partial run (at-least-once for a raise: Xen guests take spurious events)."""
        for kind, domid, index, value in entries:
            self.file.crash_point()
            dom = self.file.domains.get(domid) or self.file.gone[domid]  # (a destroy redone after its last step)
            mem = dom.mem
            if kind == K_CHAN:
                new = Chan(*CHAN.unpack(value))
                old = mem.chan(index)  # the engine's own fields: where the word is linked now
                new.last_priority, new.last_vcpu = old.last_priority, old.last_vcpu
                if old.state == ECS_FREE and new.state != ECS_FREE:
                    self.stats.reset(domid, index)  # (a new binding's counters; redone, the port is bound: kept)
                mem.set_chan(index, new)
            elif kind == K_FREES:
                struct.pack_into("<I", mem.buffer, 4 * FREES_WORD, struct.unpack("<I", value[:4])[0])
            elif kind == K_CLOSE_WORD:
                self.close_word(dom, index)
            elif kind == K_RAISE:
                if chan_is_open(mem.chan(index)):
                    self.raise_event(dom, index)
            elif kind == K_ENABLE:
                if chan_is_open(mem.chan(index)):
                    self.guest_enable(dom, index)
            elif kind == K_PAGE:
                self.page(dom, index)
            elif kind == K_RESET:
                self.reset_all(dom, index)
            elif kind == K_CONTROL:
                self.control_block(dom, index, struct.unpack_from("<I", value)[0])
            elif kind == K_DESTROY:
                self.destroy_all(dom, dying=bool(index))
            elif kind == K_VCPU:
                self.vcpu_state(dom, index, struct.unpack_from("<I", value)[0])
