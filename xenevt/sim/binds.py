"""The hypercalls that make a port: the binds (Xen's get_free_port() and evtchn_bind_*), a Xen-consumed port,
and the FIFO ABI's set-up calls (EVTCHNOP_init_control, EVTCHNOP_expand_array) with the guest's growth of its
event array that a bind needs.

Each follows xen/common/event_channel.c and event_fifo.c; who may make it is access.py's; a bind is one journal
intent (journal.py) of entries Effects carries out.
"""

from __future__ import annotations

import errno
import struct

from .. import abi
from ..abi import ECS_FREE, ECS_INTERDOMAIN, ECS_IPI, ECS_UNBOUND, ECS_VIRQ, NR_VIRQS, PER_VCPU_VIRQS
from ..engine import Chan, faults
from ..engine.layout import ABI_FIFO, CHAN_DEFERRED, CHAN_XEN
from ..errors import channel_error
from .access import Access, resolve_self
from .domain import SimDomain
from .effects import Effects, image
from .foreign import CONTROL_BLOCK_GFN, EVENT_ARRAY_GFN
from .hot import SLOW as _SLOW
from .hot import free_port as _hot_free_port
from .hotpath import HotPath
from .journal import Journal
from .statefile import K_CHAN, K_CONTROL, K_ENABLE, K_PAGE, K_RAISE
from .store import HostFile

ECS_FREE_BYTE = bytes([ECS_FREE])
FREE_SCAN_CHUNK = 1024  # channel states searched per step of the free-port scan


class Binds:
    """The port-making hypercalls over the open ``file``: checked by ``access``, written through ``journal``."""

    def __init__(self, file: HostFile, access: Access, effects: Effects, journal: Journal, hot: HotPath):
        self.file = file
        self.access = access
        self.effects = effects
        self.journal = journal
        self.hot = hot

    def init_control(self, caller: int, domid: int, vcpu: int, gfn: int, offset: int) -> int:
        """EVTCHNOP_init_control: vCPU (ENOENT), offset inside the page and 8-byte aligned (EINVAL), the frame
        (EINVAL), one block per vCPU (EINVAL).  Returns link_bits.  The simulator keeps vCPU v's control block
        on its own frame (``CONTROL_BLOCK_GFN + v``): another frame of the guest is refused, where Xen would
        map it."""
        call = "register the control block of"
        with self.file.locked():
            dom = self.access.own(caller, domid, call)
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
            self.journal.transact("init_control", caller, [(K_CONTROL, domid, vcpu, struct.pack("<I12x", offset))])
            return abi.EVTCHN_FIFO_LINK_BITS

    def expand_array(self, caller: int, domid: int, gfn: int) -> None:
        """EVTCHNOP_expand_array: FIFO only (EOPNOTSUPP), at most the array's pages (ENOSPC), the frame (EINVAL).
        The simulator's next array page is frame ``EVENT_ARRAY_GFN + nr_pages``; its capacity is the domain's
        port limit (Xen maps up to 128 pages whatever the limit)."""
        call = "expand the event array of"
        with self.file.locked():
            dom = self.access.own(caller, domid, call)
            mem = dom.mem
            if mem.event_abi != ABI_FIFO:
                raise channel_error(call, errno.EOPNOTSUPP, "the domain is on the 2-level ABI", domain=domid)
            if mem.nr_pages >= min(mem.max_pages, abi.MAX_EVENT_ARRAY_PAGES):
                raise channel_error(call, errno.ENOSPC, f"the event array has all its {mem.nr_pages} pages",
                                    domain=domid)
            if gfn != EVENT_ARRAY_GFN + mem.nr_pages:
                raise channel_error(call, errno.EINVAL, f"frame {gfn:#x} is not the domain's next event-array page "
                                    f"(frame {EVENT_ARRAY_GFN + mem.nr_pages:#x})", domain=domid)
            self.journal.transact("expand_array", caller, [(K_PAGE, domid, mem.nr_pages, b"")])

    def guest_setup(self, dom: SimDomain, port: int, caller: int) -> None:
        """evtchn_fifo_setup(): grow the array, one MASKED page at a time (EVTCHNOP_expand_array), to cover
        ``port``."""
        mem = dom.mem
        while port >= mem.nr_ports:
            if mem.nr_pages >= mem.max_pages:
                raise channel_error("bind", errno.ENOSPC, "event array is at its maximum size",
                                    domain=dom.domid, port=port)
            self.journal.transact("expand_array", caller, [(K_PAGE, dom.domid, mem.nr_pages, b"")])

    def get_free_port(self, dom: SimDomain, call: str) -> int:
        """Xen's get_free_port(): the lowest free port that is not still LINKED (busy).

        Every port below ``dom.free_hint`` is in use; that stays true until some
        process frees a channel, which bumps the domain's ``frees`` word, so the
        hint is trusted only while that word is what it was (it lives in this
        process only: nothing of it is written to the file).  The scan is one C
        call where the host has the C hot path (hot.free_port, which only reads),
        else ``free_port_scan``, the reference it is held to.
        """
        mem = dom.mem
        if dom.dying:  # get_free_port(): after evtchn_destroy() no allocation
            raise channel_error(call, errno.EINVAL, "the domain is dying", domain=dom.domid)
        nr = min(mem.nr_chans, dom.max_evtchns())  # evtchn_allocate_port(): max_evtchn_port, then max_evtchns(d)
        frees = mem.frees
        start = dom.free_hint if dom.frees_seen == frees and 1 <= dom.free_hint <= nr else 1
        hh, port = self.hot.made, _SLOW
        busy_ok = faults.on(faults.REUSE_BUSY_PORT)  # (a replay's: the C scan knows only the fixed order)
        if busy_ok:
            pass
        elif hh is not None:
            port = _hot_free_port(hh.h, dom.domid, start, nr, hh.first_free)
            first = hh.first_free[0]
        elif self.hot.unmade and self.hot.get() is not None:
            return self.get_free_port(dom, call)
        if port < 0:  # (C left it: a header Python's reads refuse, which they then name)
            port, first = self.free_port_scan(dom, start, nr, busy_ok)
        dom.frees_seen, dom.free_hint = frees, first
        if port:
            return port
        why = f"no free port (all {nr - 1} in use" + (
            f": a 32-bit guest on the 2-level ABI has ports 1..{nr - 1} only)" if nr < mem.nr_chans and dom.guest_32
            else ")")
        raise channel_error(call, errno.ENOSPC, why, domain=dom.domid)

    @staticmethod
    def free_port_scan(dom: SimDomain, start: int, nr: int, busy_ok: bool = False) -> tuple[int, int]:
        """The lowest port in ``start..nr-1`` that is free and not LINKED, 0 if none, and the first free port
        there, busy or not (``nr`` if none): a search of the channel states' bytes, not a Python loop over ports.
        ``busy_ok``: a LINKED one too, as Xen did before 78e24c269b (the replay's fault)."""
        mem, first = dom.mem, nr
        for base in range(start, nr, FREE_SCAN_CHUNK):
            states = mem.chan_states(base, min(base + FREE_SCAN_CHUNK, nr))
            i = states.find(ECS_FREE_BYTE)
            if i >= 0 and first == nr:
                first = base + i
            while i >= 0:
                word = mem.word(base + i)
                if busy_ok or word is None or not word & abi.WORD_LINKED:
                    return base + i, first
                i = states.find(ECS_FREE_BYTE, i + 1)  # freed but its event is still queued: Xen skips it too
        return 0, first

    def bind_new(self, op: str, caller: int, dom: SimDomain, call: str, chan: Chan, masked: bool,
                  remote: tuple[int, int, Chan] | None = None) -> int:
        """Allocate the lowest free port and bind it, as one intent: the record (evtchn_fifo_init: default
        priority), the remote end's record for an interdomain bind with the new port left pending (Xen: an
        event sent before the bind is not lost), and the guest enabling it."""
        port = self.get_free_port(dom, call)
        chan.flags |= dom.mem.chan(port).flags & CHAN_DEFERRED  # Xen's evtchn->pending outlives the channel
        dom.mem.grow_valid(port)  # evtchn_allocate_port(): a new bucket of channels, kept even if the bind fails
        if not dom.bare and dom.mem.event_abi == ABI_FIFO:
            self.guest_setup(dom, port, caller)
        entries = [(K_CHAN, dom.domid, port, image(chan))]
        if remote is not None:
            rdomid, rport, rchan = remote
            rchan.remote_port = port
            entries += [(K_CHAN, rdomid, rport, image(rchan)), (K_RAISE, dom.domid, port, b"")]
        if not masked:
            entries.append((K_ENABLE, dom.domid, port, b""))
        self.journal.transact(op, caller, entries)
        return port

    def alloc_unbound(self, caller: int, domid: int, remote: int, masked: bool = False) -> int:
        call = "allocate an unbound port in"
        with self.file.locked():
            dom = self.access.named(caller, resolve_self(caller, domid), call)
            remote = resolve_self(caller, remote)  # stored unchecked: it need not exist (yet)
            return self.bind_new("alloc_unbound", caller, dom, call, Chan(state=ECS_UNBOUND, remote_dom=remote),
                                  masked)

    def bind_interdomain(self, caller: int, domid: int, remote: int, remote_port: int, masked: bool = False) -> int:
        call = "bind interdomain for"
        with self.file.locked():
            dom = self.access.own(caller, domid, call)
            remote = resolve_self(caller, remote)
            rdom = self.access.domain(remote, call)
            rch = self.access.chan(rdom, remote_port, "bind to", bound=False)
            if rch.state != ECS_UNBOUND or rch.remote_dom != domid:
                why = "is not unbound" if rch.state != ECS_UNBOUND else f"accepts domain {rch.remote_dom} only"
                raise channel_error("bind to", errno.EINVAL, f"remote port {why}", domain=remote, port=remote_port)
            rnew = Chan(state=ECS_INTERDOMAIN, priority=rch.priority, flags=rch.flags, notify_vcpu=rch.notify_vcpu,
                        remote_dom=domid)
            return self.bind_new("bind_interdomain", caller, dom, call,
                                  Chan(state=ECS_INTERDOMAIN, remote_dom=remote, remote_port=remote_port), masked,
                                  remote=(remote, remote_port, rnew))

    def bind_virq(self, caller: int, domid: int, virq: int, vcpu: int = 0, masked: bool = False) -> int:
        call = "bind VIRQ for"
        with self.file.locked():
            dom = self.access.own(caller, domid, call)
            if not 0 <= virq < NR_VIRQS:
                raise channel_error(call, errno.EINVAL, f"no VIRQ {virq}", domain=domid)
            if virq not in PER_VCPU_VIRQS and vcpu != 0:  # Xen: before the vCPU is looked up (EINVAL, not ENOENT)
                raise channel_error(call, errno.EINVAL, f"VIRQ {virq} is global: bind it on vCPU 0", domain=domid)
            self.access.vcpu(dom, vcpu, call)
            p = virq_port(self.file, dom, virq, vcpu)
            if p is not None:
                raise channel_error(call, errno.EEXIST, f"VIRQ {virq} already bound on vCPU {vcpu} (port {p})",
                                    domain=domid, port=p)
            return self.bind_new("bind_virq", caller, dom, call, Chan(state=ECS_VIRQ, aux=virq, notify_vcpu=vcpu),
                                  masked)

    def bind_ipi(self, caller: int, domid: int, vcpu: int = 0, masked: bool = False) -> int:
        call = "bind IPI for"
        with self.file.locked():
            dom = self.access.own(caller, domid, call)
            self.access.vcpu(dom, vcpu, call)
            return self.bind_new("bind_ipi", caller, dom, call, Chan(state=ECS_IPI, notify_vcpu=vcpu), masked)

    def xen_port(self, domid: int, remote: int, vcpu: int = 0, caller: int = 0) -> int:
        """Xen's alloc_unbound_xen_event_channel(): a port of ``domid`` that Xen itself consumes (an ioreq
        server's, a vm_event ring's), waiting for ``remote`` (the device model, the monitoring tool) to bind;
        ``caller`` creates the server (privileged)."""
        call = "allocate a Xen-consumed port in"
        with self.file.locked():
            dom = self.access.permit(caller, domid, call)
            self.access.vcpu(dom, vcpu, call)
            return self.bind_new("alloc_unbound", 0, dom, call,
                                  Chan(state=ECS_UNBOUND, remote_dom=remote, notify_vcpu=vcpu, flags=CHAN_XEN),
                                  masked=True)


def virq_port(file: HostFile, dom: SimDomain, virq: int, vcpu: int) -> int | None:
    """The port in vCPU ``vcpu``'s virq_to_evtchn[virq]: a global VIRQ is always in vCPU 0's table, wherever
    bind_vcpu has since sent its events (so it cannot be bound twice, and keeps being raised there)."""
    vcpu = 0 if virq not in PER_VCPU_VIRQS else vcpu
    for p in dom.open_ports():
        ch = file.rec(dom, p)
        if ch.state == ECS_VIRQ and ch.aux == virq and (virq not in PER_VCPU_VIRQS or ch.notify_vcpu == vcpu):
            return p
    return None
