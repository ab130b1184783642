"""Xen's side of the simulated host: the event-channel hypercalls and who may make them.

Each follows xen/common/event_channel.c (and XSM's default policy for who may
name which domain); raising an event is evtchn_port_set_pending and the vCPU
kick; closing and resetting are expressed as journal entries so that a kill
leaves them whole or undone.
"""

from __future__ import annotations

import errno
import os
import struct

from .. import abi
from ..abi import (
    ECS_FREE,
    ECS_INTERDOMAIN,
    ECS_IPI,
    ECS_RESERVED,
    ECS_TO_EVTCHNSTAT,
    ECS_UNBOUND,
    ECS_VIRQ,
    NR_VIRQS,
    PER_VCPU_VIRQS,
    STATES,
)
from ..engine import SP, Chan
from ..engine.codes import engine_error
from ..engine.layout import ABI_FIFO, CHAN, CHAN_DEFERRED, CHAN_FIELDS, CHAN_XEN, HEADER_FIELDS
from ..errors import channel_error
from ..ports import NotifyResult, PortStatus, chan_status
from . import hot
from .foreign import CONTROL_BLOCK_GFN, EVENT_ARRAY_GFN
from .statefile import (
    K_CHAN,
    K_CLOSE_WORD,
    K_CONTROL,
    K_DESTROY,
    K_ENABLE,
    K_FREES,
    K_PAGE,
    K_RAISE,
    K_RESET,
    RAISE,
)
from .store import SimDomain, kernel_boot

ECS_FREE_BYTE = bytes([ECS_FREE])
_hot_send = hot.send
_hot_free_port = hot.free_port
_SLOW = hot.SLOW
FREE_SCAN_CHUNK = 1024  # channel states searched per step of the free-port scan
# XENEVT_SIM_BREAK=<rule>: one rule deliberately wrong, so the differential scenarios (tests/scenarios) are seen
# to catch it.  Rules: close-peer (closing an interdomain end leaves the peer interdomain), unmask-no-raise
# (EVTCHNOP_unmask clears the mask but does not raise a pending event).
SIM_BREAK = "XENEVT_SIM_BREAK"
_OPEN_STATES = bytes(0 if b in (ECS_FREE, ECS_RESERVED) else 1 for b in range(256))


class Hypercalls:
    """EVTCHNOP_* over the state file; methods take the calling domain first, as hypercalls do."""

    def _raise(self, dom: SimDomain, port: int, unmask: bool = False) -> int:
        """Xen's evtchn_port_set_pending (or the unmask hypercall) plus the vCPU kick.

        The engine links the port in several stores; the journal's raise mark (three word stores, the only
        cost the hot path pays) tells the next lock holder which queue a process killed in between left.
        """
        mem = dom.mem  # evtchn_port_set_pending(): a port Xen consumes is not the guest's (one byte read)
        if 0 < port < mem.nr_chans and mem.buffer[mem.geometry.chans_offset + port * CHAN.size + 3] & CHAN_XEN:
            return 0
        jw = self._jw
        jw[RAISE // 4 + 1] = port
        jw[RAISE // 4] = dom.domid + 1
        try:
            if self._crash_sleep:
                self._crash_point()
            engine = dom.engine if dom.mem.event_abi == ABI_FIFO else dom.l2
            rc = engine.unmask(port) if unmask else engine.set_pending(port)
        finally:
            jw[RAISE // 4] = 0
        if rc < 0:
            raise engine_error(rc, "raise", dom.domid, port, refused=True)
        if not unmask:
            self._count(dom.domid, port, 0)
        if rc & SP.UPCALL:
            self._kick(dom, self._rec(dom, port).notify_vcpu)
        return rc

    def _kick(self, dom: SimDomain, vcpu: int) -> None:
        """vcpu_mark_events_pending(): vcpu_info's evtchn_upcall_pending set (on either ABI: real Xen shows it
        after a FIFO domain resets to 2-level), the simulator's upcall word bumped and its sleepers woken."""
        mem = dom.mem
        if mem.geometry.version >= 2 and 0 <= vcpu < mem.nr_vcpus:
            mem.buffer[mem.geometry.vcpu_info_offset(vcpu)] = 1
        if 0 <= vcpu < mem.nr_vcpus:
            hot.kick_word(self._upcall_word(dom, vcpu))  # bumped; a futex wake only if a consumer sleeps on it

    def _close_word(self, dom: SimDomain, port: int) -> None:
        """Linux masks the port before closing it (a bare domain has no Linux); Xen's evtchn_close() clears
        PENDING (and DEFERRED) through the domain's ABI."""
        if dom.mem.event_abi != ABI_FIFO:
            if not dom.bare:
                dom.l2.guest_mask(port)
            dom.l2.clear_pending(port)
            return
        if dom.mem.word(port) is not None and not dom.bare:
            dom.engine.guest_mask(port)
        dom.engine.clear_pending(port)

    def _guest_enable(self, dom: SimDomain, port: int) -> None:
        """The guest kernel unmasks a port it just bound (Linux's unmask: locally, or EVTCHNOP_unmask when the
        port is pending)."""
        if dom.mem.event_abi == ABI_FIFO:
            if dom.mem.word(port) is not None and dom.engine.guest_unmask(port) == 0:
                self._raise(dom, port, unmask=True)
            return
        rc = dom.l2.guest_unmask(port)
        if rc == 0:
            self._raise(dom, port, unmask=True)
        elif rc > 0 and rc & SP.UPCALL:
            self._kick(dom, self._rec(dom, port).notify_vcpu)

    def _control_block(self, dom: SimDomain, vcpu: int, offset: int) -> None:
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

    def init_control(self, caller: int, domid: int, vcpu: int, gfn: int, offset: int) -> int:
        """EVTCHNOP_init_control: vCPU (ENOENT), offset inside the page and 8-byte aligned (EINVAL), the frame
        (EINVAL), one block per vCPU (EINVAL).  Returns link_bits.  The simulator keeps vCPU v's control block
        on its own frame (``CONTROL_BLOCK_GFN + v``): another frame of the guest is refused, where Xen would
        map it."""
        call = "register the control block of"
        with self.locked():
            dom = self._own(caller, domid, call)
            mem = dom.mem
            if not 0 <= vcpu < mem.nr_vcpus:
                raise channel_error(call, errno.ENOENT, f"no vCPU {vcpu} (domain has {mem.nr_vcpus})",
                                    domain=domid, vcpu=vcpu)
            if offset > abi.PAGE_SIZE - abi.CONTROL_BLOCK_SIZE or offset % 8:
                raise channel_error(call, errno.EINVAL, f"offset {offset:#x} is not 8-byte aligned inside the page",
                                    domain=domid, vcpu=vcpu)
            if gfn != CONTROL_BLOCK_GFN + vcpu:
                raise channel_error(call, errno.EINVAL, f"frame {gfn:#x} cannot hold vCPU {vcpu}'s control block "
                                    f"(the simulator keeps it on frame {CONTROL_BLOCK_GFN + vcpu:#x})",
                                    domain=domid, vcpu=vcpu)
            if mem.event_abi == ABI_FIFO and mem.cb_offset(vcpu) is not None:
                raise channel_error(call, errno.EINVAL, "the vCPU has a control block already", domain=domid,
                                    vcpu=vcpu)
            self._transact("init_control", caller, [(K_CONTROL, domid, vcpu, struct.pack("<I12x", offset))])
            return abi.EVTCHN_FIFO_LINK_BITS

    def expand_array(self, caller: int, domid: int, gfn: int) -> None:
        """EVTCHNOP_expand_array: FIFO only (EOPNOTSUPP), at most the array's pages (ENOSPC), the frame (EINVAL).
        The simulator's next array page is frame ``EVENT_ARRAY_GFN + nr_pages``; its capacity is the domain's
        port limit (Xen maps up to 128 pages whatever the limit)."""
        call = "expand the event array of"
        with self.locked():
            dom = self._own(caller, domid, call)
            mem = dom.mem
            if mem.event_abi != ABI_FIFO:
                raise channel_error(call, errno.EOPNOTSUPP, "the domain is on the 2-level ABI", domain=domid)
            if mem.nr_pages >= min(mem.max_pages, abi.MAX_EVENT_ARRAY_PAGES):
                raise channel_error(call, errno.ENOSPC, f"the event array has all its {mem.nr_pages} pages",
                                    domain=domid)
            if gfn != EVENT_ARRAY_GFN + mem.nr_pages:
                raise channel_error(call, errno.EINVAL, f"frame {gfn:#x} is not the domain's next event-array page "
                                    f"(frame {EVENT_ARRAY_GFN + mem.nr_pages:#x})", domain=domid)
            self._transact("expand_array", caller, [(K_PAGE, domid, mem.nr_pages, b"")])

    def _page(self, dom: SimDomain, index: int) -> None:
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
                self._raise(dom, first + i)

    def _frees_entry(self, dom: SimDomain) -> tuple[int, int, int, bytes]:
        """The freed-channels count one higher: any process's lowest-free-port hint above a freed port is stale."""
        return (K_FREES, dom.domid, 0, struct.pack("<I12x", (dom.mem.frees + 1) & 0xFFFFFFFF))

    def _close_entries(self, dom: SimDomain, port: int, ch: Chan) -> list[tuple[int, int, int, bytes]]:
        """evtchn_close(): the other end of an interdomain channel goes back to unbound (waiting for this
        domain) if it still points here; the word is masked and cleared; the record freed, lastq kept."""
        out = []
        if ch.state == ECS_INTERDOMAIN and os.environ.get(SIM_BREAK) != "close-peer":
            rdom = self.domains.get(ch.remote_dom)
            if rdom is not None and 0 < ch.remote_port < rdom.mem.nr_chans:  # (a redone reset may meet a torn one)
                rch = rdom.mem.chan(ch.remote_port)
                if rch.state == ECS_INTERDOMAIN and (rch.remote_dom, rch.remote_port) == (dom.domid, port):
                    out.append((K_CHAN, rdom.domid, ch.remote_port,
                                self._image(Chan(state=ECS_UNBOUND, priority=rch.priority, flags=rch.flags,
                                                 notify_vcpu=rch.notify_vcpu, remote_dom=dom.domid))))
        out.append((K_CLOSE_WORD, dom.domid, port, b""))
        out.append((K_CHAN, dom.domid, port, self._image(Chan(flags=ch.flags & CHAN_DEFERRED))))  # (sticky)
        out.append(self._frees_entry(dom))
        return out

    def _reset_all(self, dom: SimDomain) -> None:
        """EVTCHNOP_reset, restartable: close what is still open, then make every free record and word clean
        (a close cut short by a kill may have left a record half written).  Ports Xen consumes stay: the
        guest's evtchn_close() refuses them."""
        self._close_all(dom, xen_too=False)
        self._fifo_destroy(dom)
        self._clean_free(dom)

    def _close_all(self, dom: SimDomain, xen_too: bool) -> None:
        """evtchn_close() of every open port (Xen's own ones too for ``xen_too``: evtchn_destroy), each peer
        sent back to unbound; restartable, the frees count left to the caller."""
        mem = dom.mem
        for port in self._open_ports(dom):
            self._crash_point()
            ch = mem.chan(port)  # unchecked: a close cut short may have left it half written
            if ch.flags & CHAN_XEN and not xen_too:
                continue
            for kind, domid, index, value in self._close_entries(dom, port, ch):
                if kind != K_FREES:
                    self._apply([(kind, domid, index, value)])

    def _destroy_all(self, dom: SimDomain, dying: bool) -> None:
        """evtchn_destroy() for domain_kill(), restartable: every port closed (so each interdomain peer goes
        back to unbound, waiting for this domid), the FIFO control blocks and array let go (no kernel sets
        anything up again), and the domain table flag stored last.  Gone, the domain leaves ``domains``."""
        self._close_all(dom, xen_too=True)
        if dom.mem.event_abi == ABI_FIFO:
            dom.mem.fifo_teardown()
        dom.engine.refresh()
        self._clean_free(dom)
        dom.set_destroyed(dying)
        if not dying and dom.domid in self.domains:
            self.gone[dom.domid] = self.domains.pop(dom.domid)
            self._nr_chans.pop(dom.domid, None)

    def _clean_free(self, dom: SimDomain) -> None:
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
        self._apply([self._frees_entry(dom)])

    def _fifo_destroy(self, dom: SimDomain) -> None:
        """evtchn_fifo_destroy() + evtchn_2l_init(): control blocks and event array let go, back on 2-level
        (shared_info's bitmaps were never touched while on FIFO: they keep what they held).

        A simulated Linux guest then sets its event channels up again, as the kernel that follows a reset
        (kexec, a soft reset) does at boot, on the ABI its kernel chose (store.kernel_boot): FIFO, a control
        block per vCPU and one MASKED array page; 2-level, every port masked.  A bare domain (a test guest's
        raw view) stays as Xen left it.  Both steps may run again after a kill."""
        mem = dom.mem
        if mem.event_abi == ABI_FIFO:
            mem.fifo_teardown()
        if not dom.bare:
            kernel_boot(mem, dom.kernel_2l)
        dom.engine.refresh()

    def _get_free_port(self, dom: SimDomain, call: str) -> int:
        """Xen's get_free_port(): the lowest free port that is not still LINKED (busy).

        Every port below ``dom.free_hint`` is in use; that stays true until some
        process frees a channel, which bumps the domain's ``frees`` word, so the
        hint is trusted only while that word is what it was (it lives in this
        process only: nothing of it is written to the file).  The scan is one C
        call where the host has the C hot path (hot.free_port, which only reads),
        else ``_free_port_scan``, the reference it is held to.
        """
        mem = dom.mem
        if dom.dying:  # get_free_port(): after evtchn_destroy() no allocation
            raise channel_error(call, errno.EINVAL, "the domain is dying", domain=dom.domid)
        nr = mem.nr_chans if mem.event_abi == ABI_FIFO else min(mem.nr_chans, abi.EVTCHN_2L_NR_CHANNELS)  # max_evtchns
        frees = mem.frees
        start = dom.free_hint if dom.frees_seen == frees and 1 <= dom.free_hint <= nr else 1
        hot, port = self._hot, _SLOW
        if hot:
            port = _hot_free_port(hot.h, dom.domid, start, nr, hot.first_free)
            first = hot.first_free[0]
        elif hot is None and self._hot_host() is not None:
            return self._get_free_port(dom, call)
        if port < 0:  # (C left it: a header Python's reads refuse, which they then name)
            port, first = self._free_port_scan(dom, start, nr)
        dom.frees_seen, dom.free_hint = frees, first
        if port:
            return port
        raise channel_error(call, errno.ENOSPC, f"no free port (all {nr - 1} in use)", domain=dom.domid)

    @staticmethod
    def _free_port_scan(dom: SimDomain, start: int, nr: int) -> tuple[int, int]:
        """The lowest port in ``start..nr-1`` that is free and not LINKED, 0 if none, and the first free port
        there, busy or not (``nr`` if none): a search of the channel states' bytes, not a Python loop over ports."""
        mem, first = dom.mem, nr
        for base in range(start, nr, FREE_SCAN_CHUNK):
            states = mem.chan_states(base, min(base + FREE_SCAN_CHUNK, nr))
            i = states.find(ECS_FREE_BYTE)
            if i >= 0 and first == nr:
                first = base + i
            while i >= 0:
                word = mem.word(base + i)
                if word is None or not word & abi.WORD_LINKED:
                    return base + i, first
                i = states.find(ECS_FREE_BYTE, i + 1)  # freed but its event is still queued: Xen skips it too
        return 0, first

    def _bind_new(self, op: str, caller: int, dom: SimDomain, call: str, chan: Chan, masked: bool,
                  remote: tuple[int, int, Chan] | None = None) -> int:
        """Allocate the lowest free port and bind it, as one intent: the record (evtchn_fifo_init: default
        priority), the remote end's record for an interdomain bind with the new port left pending (Xen: an
        event sent before the bind is not lost), and the guest enabling it."""
        port = self._get_free_port(dom, call)
        chan.flags |= dom.mem.chan(port).flags & CHAN_DEFERRED  # Xen's evtchn->pending outlives the channel
        dom.mem.grow_valid(port)  # evtchn_allocate_port(): a new bucket of channels, kept even if the bind fails
        if not dom.bare and dom.mem.event_abi == ABI_FIFO:
            self._guest_setup(dom, port, caller)
        entries = [(K_CHAN, dom.domid, port, self._image(chan))]
        if remote is not None:
            rdomid, rport, rchan = remote
            rchan.remote_port = port
            entries += [(K_CHAN, rdomid, rport, self._image(rchan)), (K_RAISE, dom.domid, port, b"")]
        if not masked:
            entries.append((K_ENABLE, dom.domid, port, b""))
        self._transact(op, caller, entries)
        return port

    def alloc_unbound(self, caller: int, domid: int, remote: int, masked: bool = False) -> int:
        call = "allocate an unbound port in"
        with self.locked():
            dom = self._access(caller, self._self(caller, domid), call)
            remote = self._self(caller, remote)  # stored unchecked: it need not exist (yet)
            return self._bind_new("alloc_unbound", caller, dom, call, Chan(state=ECS_UNBOUND, remote_dom=remote),
                                  masked)

    def bind_interdomain(self, caller: int, domid: int, remote: int, remote_port: int, masked: bool = False) -> int:
        call = "bind interdomain for"
        with self.locked():
            dom = self._own(caller, domid, call)
            remote = self._self(caller, remote)
            rdom = self.domain(remote, call)
            rch = self._chan(rdom, remote_port, "bind to", bound=False)
            if rch.state != ECS_UNBOUND or rch.remote_dom != domid:
                why = "is not unbound" if rch.state != ECS_UNBOUND else f"accepts domain {rch.remote_dom} only"
                raise channel_error("bind to", errno.EINVAL, f"remote port {why}", domain=remote, port=remote_port)
            rnew = Chan(state=ECS_INTERDOMAIN, priority=rch.priority, flags=rch.flags, notify_vcpu=rch.notify_vcpu,
                        remote_dom=domid)
            return self._bind_new("bind_interdomain", caller, dom, call,
                                  Chan(state=ECS_INTERDOMAIN, remote_dom=remote, remote_port=remote_port), masked,
                                  remote=(remote, remote_port, rnew))

    def bind_virq(self, caller: int, domid: int, virq: int, vcpu: int = 0, masked: bool = False) -> int:
        call = "bind VIRQ for"
        with self.locked():
            dom = self._own(caller, domid, call)
            if not 0 <= virq < NR_VIRQS:
                raise channel_error(call, errno.EINVAL, f"no VIRQ {virq}", domain=domid)
            if virq not in PER_VCPU_VIRQS and vcpu != 0:  # Xen: before the vCPU is looked up (EINVAL, not ENOENT)
                raise channel_error(call, errno.EINVAL, f"VIRQ {virq} is global: bind it on vCPU 0", domain=domid)
            self._vcpu(dom, vcpu, call)
            p = self._virq_port(dom, virq, vcpu)
            if p is not None:
                raise channel_error(call, errno.EEXIST, f"VIRQ {virq} already bound on vCPU {vcpu} (port {p})",
                                    domain=domid, port=p)
            return self._bind_new("bind_virq", caller, dom, call, Chan(state=ECS_VIRQ, aux=virq, notify_vcpu=vcpu),
                                  masked)

    def bind_ipi(self, caller: int, domid: int, vcpu: int = 0, masked: bool = False) -> int:
        call = "bind IPI for"
        with self.locked():
            dom = self._own(caller, domid, call)
            self._vcpu(dom, vcpu, call)
            return self._bind_new("bind_ipi", caller, dom, call, Chan(state=ECS_IPI, notify_vcpu=vcpu), masked)

    def send(self, caller: int, domid: int, port: int, tell_unbound: bool = True) -> NotifyResult:
        """EVTCHNOP_send.  Xen drops a send on an unbound port and returns 0; a person using the CLI is
        told instead (``tell_unbound``), a program using the library gets Xen's silence.

        One C call (hot.send: the lock, Xen's checks, the raise, the counter, the kick) does the common case;
        whatever it leaves (an error, an unbound port, Xen's own ports, a record to look at closely, an update
        to finish) is decided by the Python hypercall below, the reference the C is held to."""
        hh = self._hot_h  # (this thread holding the lock already: EDEADLK, so the Python way, which nests)
        if hh is not None:
            code = _hot_send(hh, caller, domid, port)
            if code >= 0:
                r = self._sent.get((code, domid, port))
                return r if r is not None else self._sent_result(code, domid, port)
        elif self._hot is None and self._hot_host() is not None:
            return self.send(caller, domid, port, tell_unbound)
        return self._send(caller, domid, port, tell_unbound)

    def _sent_result(self, code: int, domid: int, port: int) -> NotifyResult:
        """What a send the C hot path made answers (``code``: SP bits | port << 12 | domain << 32), made once."""
        if len(self._sent) > 4096:
            self._sent.clear()
        r = self._sent[(code, domid, port)] = NotifyResult(domid, port, code >> hot.SP_DOM_SHIFT,
                                                           code >> hot.SP_PORT_SHIFT & hot.PORT_BITS,
                                                           _outcome(SP(code & hot.SP_BITS)))
        return r

    def _send(self, caller: int, domid: int, port: int, tell_unbound: bool = True) -> NotifyResult:
        """EVTCHNOP_send in Python: the reference, and every case the C hot path leaves."""
        call = "notify"
        with self.locked():
            dom = self._own(caller, domid, call, port)
            ch = self._chan(dom, port, call)
            self._not_xens(ch, call, domid, port, "a guest cannot send on it")
            if ch.state == ECS_INTERDOMAIN:
                target, tport = self.domain(ch.remote_dom, call, port), ch.remote_port
                if self._rec(target, tport).flags & CHAN_XEN:  # Xen's notification function takes it
                    return NotifyResult(domid, port, target.domid, tport, "taken by Xen")
            elif ch.state == ECS_IPI:
                target, tport = dom, port
            elif ch.state == ECS_UNBOUND:
                if not tell_unbound:
                    return NotifyResult(domid, port, None, None, "dropped: port is unbound")
                raise channel_error(call, errno.ENOTCONN,
                                    "port is unbound, nothing is connected (Xen drops the notification)",
                                    domain=domid, port=port)
            else:
                state = STATES[ECS_TO_EVTCHNSTAT[ch.state]]
                raise channel_error(call, errno.EINVAL, f"cannot send on a {state} port", domain=domid, port=port)
            rc = SP(self._raise(target, tport))
        return NotifyResult(domid, port, target.domid, tport, _outcome(rc))

    def raise_virq(self, domid: int, virq: int, vcpu: int = 0) -> NotifyResult:
        """send_guest_vcpu_virq(): Xen raises a VIRQ on the port bound to it."""
        with self.locked():
            dom = self.domain(domid, "raise VIRQ in")
            p = self._virq_port(dom, virq, vcpu)
            if p is not None:
                return NotifyResult(domid, p, domid, p, _outcome(SP(self._raise(dom, p))))
            raise channel_error("raise VIRQ in", errno.ENOENT, f"VIRQ {virq} is not bound on vCPU {vcpu}",
                                domain=domid)

    @staticmethod
    def _not_xens(ch: Chan, call: str, domid: int, port: int, why: str) -> None:
        """A guest's send, close or bind_vcpu on a port Xen itself consumes: EINVAL (event_channel.c's
        consumer_is_xen checks)."""
        if ch.flags & CHAN_XEN:
            raise channel_error(call, errno.EINVAL, f"Xen itself consumes this port: {why}", domain=domid,
                                port=port)

    def _virq_port(self, dom: SimDomain, virq: int, vcpu: int) -> int | None:
        """The port in vCPU ``vcpu``'s virq_to_evtchn[virq]: a global VIRQ is always in vCPU 0's table, wherever
        bind_vcpu has since sent its events (so it cannot be bound twice, and keeps being raised there)."""
        vcpu = 0 if virq not in PER_VCPU_VIRQS else vcpu
        for p in self._open_ports(dom):
            ch = self._rec(dom, p)
            if ch.state == ECS_VIRQ and ch.aux == virq and (virq not in PER_VCPU_VIRQS or ch.notify_vcpu == vcpu):
                return p
        return None

    def close_port(self, caller: int, domid: int, port: int) -> None:
        call = "close"
        with self.locked():
            dom = self._own(caller, domid, call, port)
            ch = self._chan(dom, port, call)
            self._not_xens(ch, call, domid, port, "only Xen closes it")
            self._transact("close", caller, self._close_entries(dom, port, ch))

    def reset(self, caller: int, domid: int) -> None:
        """EVTCHNOP_reset: close every port of the domain and put it back on the 2-level ABI, as one intent
        (redone whole after a kill).  Xen resets only the caller itself or a domain its toolstack paused."""
        domid = self._self(caller, domid)
        with self.locked():
            dom = self._access(caller, domid, "reset")
            if caller != domid and not dom.paused:
                raise channel_error("reset", errno.EINVAL, f"domain {domid} is running: Xen resets a domain only "
                                    f"when it asks itself or is paused (xl pause {domid})", domain=domid)
            self._transact("reset", caller, [(K_RESET, domid, 0, b"")])

    def destroy_domain(self, caller: int, domid: int, dying: bool = False) -> None:
        """XEN_DOMCTL_destroydomain as the toolstack makes it (``xl destroy``): a privileged caller (EPERM),
        never itself or a privileged domain (EINVAL).  domain_kill() runs evtchn_destroy() as one intent;
        ``dying`` leaves the domain listed as dying (something still holds a reference to it), else it is
        gone.  Destroying a dying domain again finishes it."""
        call = "destroy"
        with self.locked():
            dom = self.permit(caller, domid, call)
            if domid == caller or dom.privileged:
                raise channel_error(call, errno.EINVAL, "the simulator destroys no privileged domain and no "
                                    "domain destroys itself", domain=domid)
            self._transact("destroy", caller, [(K_DESTROY, domid, int(dying), b"")])

    def pause(self, domid: int, paused: bool = True, caller: int = 0) -> None:
        """The toolstack's pause and unpause (``xl pause``, a privileged ``caller``): all that the event channels
        care about is that EVTCHNOP_reset may then name the domain."""
        with self.locked():
            self.permit(caller, domid, "pause" if paused else "unpause").set_paused(paused)

    def _store_field(self, dom: SimDomain, port: int, field: str, value: int) -> None:
        """One field of a channel record in one aligned store: a kill never leaves it half written."""
        at = dom.mem.geometry.chans_offset + port * CHAN.size + CHAN_FIELDS[field]
        if field == "priority":
            dom.mem.buffer[at] = value
        else:
            with dom.mem.buffer[at: at + 2] as view, view.cast("H") as half:
                half[0] = value

    def set_priority(self, caller: int, domid: int, port: int, priority: int) -> None:
        call = "set the priority of"
        with self.locked():
            dom = self._own(caller, domid, call, port)
            ch = self._chan(dom, port, call, bound=False)
            if dom.mem.event_abi != ABI_FIFO:  # the 2-level port ops have no set_priority
                raise channel_error(call, errno.ENOSYS, "the domain is on the 2-level ABI: ports have no priority",
                                    domain=domid, port=port)
            if ch.state in (ECS_FREE, ECS_RESERVED) or ch.flags & CHAN_XEN:  # evtchn_usable(), before the range
                raise channel_error(call, errno.EACCES, "Xen itself consumes this port" if ch.flags & CHAN_XEN
                                    else "port is not bound", domain=domid, port=port)
            if not 0 <= priority <= abi.EVTCHN_FIFO_PRIORITY_MIN:
                raise channel_error(call, errno.EINVAL, f"priority {priority} out of range 0..15", domain=domid,
                                    port=port)
            # only future events use it: a linked event stays on its old queue
            self._store_field(dom, port, "priority", priority)

    def bind_vcpu(self, caller: int, domid: int, port: int, vcpu: int) -> None:
        call = "move"
        with self.locked():
            dom = self._own(caller, domid, call, port)
            self._vcpu(dom, vcpu, call, port)  # Xen: domain_vcpu() first, ENOENT before the port is looked at
            ch = self._chan(dom, port, call)
            self._not_xens(ch, call, domid, port, "a guest cannot move it")
            if ch.state == ECS_IPI or (ch.state == ECS_VIRQ and ch.aux in PER_VCPU_VIRQS):
                raise channel_error(call, errno.EINVAL, "IPI and per-vCPU VIRQ ports cannot move", domain=domid,
                                    port=port)
            self._store_field(dom, port, "notify_vcpu", vcpu)

    def evtchn_unmask(self, caller: int, domid: int, port: int) -> None:
        """EVTCHNOP_unmask itself (the guest's unmask is GuestKernel.unmask): any valid port; one no guest can
        use (free, reserved) is left alone, without an error."""
        call = "unmask"
        with self.locked():
            dom = self._own(caller, domid, call, port)
            ch = self._chan(dom, port, call, bound=False)
            if ch.state in (ECS_FREE, ECS_RESERVED) or ch.flags & CHAN_XEN:  # not usable by a guest: left alone
                return
            if os.environ.get(SIM_BREAK) == "unmask-no-raise":  # the mask cleared, a pending event left unseen
                if dom.mem.event_abi == ABI_FIFO:
                    word = dom.mem.word(port)
                    if word is not None:
                        dom.mem.set_word(port, word & ~abi.WORD_MASKED)
                elif port < abi.EVTCHN_2L_NR_CHANNELS:
                    with dom.mem.l2_mask() as mask:
                        mask[port // 64] &= ~(1 << port % 64)
                return
            self._raise(dom, port, unmask=True)

    def xen_port(self, domid: int, remote: int, vcpu: int = 0, caller: int = 0) -> int:
        """Xen's alloc_unbound_xen_event_channel(): a port of ``domid`` that Xen itself consumes (an ioreq
        server's, a vm_event ring's), waiting for ``remote`` (the device model, the monitoring tool) to bind;
        ``caller`` creates the server (privileged)."""
        call = "allocate a Xen-consumed port in"
        with self.locked():
            dom = self.permit(caller, domid, call)
            self._vcpu(dom, vcpu, call)
            return self._bind_new("alloc_unbound", 0, dom, call,
                                  Chan(state=ECS_UNBOUND, remote_dom=remote, notify_vcpu=vcpu, flags=CHAN_XEN),
                                  masked=True)

    def _status(self, dom: SimDomain, port: int) -> PortStatus:
        return chan_status(dom.domid, port, self._rec(dom, port), self._word_or_bits(dom, port),
                           two_level=dom.mem.event_abi != ABI_FIFO)

    def _word_or_bits(self, dom: SimDomain, port: int) -> int | None:
        """The port's FIFO event word; on 2-level its pending and mask bits in the word's PENDING and MASKED
        places (nothing is ever LINKED there)."""
        return dom.mem.word(port) if dom.mem.event_abi == ABI_FIFO else dom.mem.l2_word(port)

    def list_ports(self, caller: int, domid: int) -> list[PortStatus]:
        dom = self._access(caller, domid, "list the ports of")
        return [self._status(dom, p) for p in self._open_ports(dom)]

    def _open_ports(self, dom: SimDomain) -> list[int]:
        """Ports whose channel is neither free nor reserved, found by a search of the state bytes."""
        states = dom.mem.chan_states(0, dom.mem.nr_chans).translate(_OPEN_STATES)
        out, port = [], states.find(1, 1)
        while port >= 0:
            out.append(port)
            port = states.find(1, port + 1)
        return out

    def _nr_open(self, dom: SimDomain) -> int:
        """How many ports _open_ports finds, counted by the same search without a list (info: every domain)."""
        return dom.mem.chan_states(0, dom.mem.nr_chans).translate(_OPEN_STATES).count(1, 1)

    def info(self) -> dict:
        doms = []
        for d in self.domains.values():
            used = self._nr_open(d)
            doms.append({"domain": d.domid, "privileged": d.privileged, "paused": d.paused, "dying": d.dying,
                         "abi": "FIFO" if d.mem.event_abi == ABI_FIFO else "2-level", "vcpus": d.mem.nr_vcpus,
                         "max_ports": d.mem.nr_chans, "limit_from": "the simulated hypervisor's max_evtchn_port",
                         "event_array_pages": d.mem.nr_pages, "ports_in_use": used,
                         "control_blocks": [v for v in range(d.mem.nr_vcpus) if d.mem.cb_offset(v) is not None],
                         "gfns": self.gfns(d.domid)})
        abis = {"FIFO" if d.mem.event_abi == ABI_FIFO else "2-level" for d in self.domains.values()}
        return {"backend": "sim", "state_file": self.path, "xen_version": self.xen_version,
                "abi": abis.pop() if len(abis) == 1 else "mixed",
                "engine": self._engine_name(),
                "domains": doms}

    def _engine_name(self) -> str:
        return next(iter(self.domains.values())).engine.name if self.domains else "none"


def _outcome(rc: SP) -> str:
    if SP.DEFERRED in rc:
        return "deferred"
    if SP.NO_CONTROL in rc:
        return "dropped: no control block"
    if SP.MASKED in rc:
        return "pending, masked"
    if SP.ALREADY_LINKED in rc or SP.WAS_PENDING in rc:
        return "coalesced"
    if SP.LINK_GAVE_UP in rc:
        return "lost: tail stayed busy"
    return "queued" if SP.LINKED in rc else "raised"
