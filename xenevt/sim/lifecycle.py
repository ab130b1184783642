"""vCPUs going down and up: Xen's VCPUOP_down/up, and Linux's CPU hotplug path over them, in Linux's order.

Xen (xen/common/domain.c, event_fifo.c) keeps a down vCPU's control block and queues: events bound to it are still
linked there, and wait for it to come back.  Linux (6.1, a PV guest) takes CPU ``n`` down so:

1. fixup_irqs(): every port the CPU takes events for that Xen lets move (evtchn_bind_vcpu: unbound,
   interdomain, a global VIRQ; never an IPI or a per-vCPU VIRQ) goes to the online CPU with the fewest channels
   (select_target_cpu, the lowest on a tie), masked around EVTCHNOP_bind_vcpu and unmasked after unless it was
   masked before (xen_rebind_evtchn_to_cpu; the unmask relinks a pending event on its new vCPU);
2. the dying CPU makes VCPUOP_down itself (xen_pv_play_dead);
3. xen_pv_cpu_die() closes its IPIs and per-CPU VIRQs (xen_smp_intr_free, the irq_work IPI, xen_teardown_timer);
4. evtchn_fifo_percpu_deinit() drains its queues without handling them (__evtchn_fifo_handle_events(cpu, drop)):
   each event is unlinked and its PENDING left set, so no port stays LINKED (busy) on a queue no one will read.

Up is the reverse (CPUHP_XEN_PREPARE binds the per-CPU ports at the lowest free numbers, CPUHP_XEN_EVTCHN_PREPARE
registers a control block only if the CPU never had one, then VCPUOP_up).  Each step is a hypercall of its own,
as on Linux, each kill-safe (the journal); a hotplug cut short by a kill is finished by running it again.
"""

from __future__ import annotations

import errno
import struct

from .. import abi
from ..abi import ECS_INTERDOMAIN, ECS_IPI, ECS_PIRQ, ECS_UNBOUND, ECS_VIRQ, PER_VCPU_VIRQS, VIRQS
from ..engine import faults
from ..engine.layout import ABI_FIFO, CHAN_XEN, VCPU_DOWN, VCPU_NEVER_UP, VCPU_ONLINE
from ..errors import channel_error
from .access import Access
from .binds import Binds
from .consumers import Consumers
from .domain import SimDomain, percpu_ports
from .foreign import CONTROL_BLOCK_GFN
from .guest import GuestKernel
from .hypercalls import Hypercalls
from .journal import Journal
from .statefile import K_VCPU
from .store import HostFile

DRAIN_BATCH = 4096  # events unlinked per engine call while draining a down vCPU's queues
MOVABLE = (ECS_UNBOUND, ECS_INTERDOMAIN, ECS_PIRQ)  # evtchn_bind_vcpu(): these, and a global VIRQ


def movable(state: int, aux: int, flags: int) -> bool:
    """Whether Xen's EVTCHNOP_bind_vcpu lets a port of this state move (and the guest may: not Xen's own)."""
    if flags & CHAN_XEN:
        return False
    return state in MOVABLE or (state == ECS_VIRQ and aux not in PER_VCPU_VIRQS)


class Lifecycle:
    """VCPUOP_down/up and Linux's hotplug path over the open ``file``, made of the other parts' hypercalls."""

    def __init__(self, file: HostFile, access: Access, journal: Journal, binds: Binds, xen: Hypercalls,
                 guest: GuestKernel, consumers: Consumers):
        self.file = file
        self.access = access
        self.journal = journal
        self.binds = binds
        self.xen = xen
        self.guest = guest
        self.consumers = consumers

    # --- Xen's side alone ------------------------------------------------------------------------------------
    def vcpu_op(self, caller: int, domid: int, vcpu: int, up: bool) -> None:
        """VCPUOP_down / VCPUOP_up as the domain makes them (behind its kernel's back, if made alone): down keeps
        the control block and queues (events bound to the vCPU still link there); up of a vCPU never initialised
        is EINVAL (Xen: !v->is_initialised).  Either on a vCPU already so is 0, nothing changed."""
        call = "bring up a vCPU of" if up else "take down a vCPU of"
        with self.file.locked():
            dom = self.access.own(caller, domid, "make VCPUOP_up or VCPUOP_down for", vcpu=vcpu)
            self.access.vcpu(dom, vcpu, call)
            state = dom.mem.vcpu_state(vcpu)
            if up and state == VCPU_NEVER_UP:
                raise channel_error(call, errno.EINVAL, f"vCPU {vcpu} was never initialised (VCPUOP_initialise "
                                    "first: `xenevt sim vcpu up` brings it up as Linux does)", domain=domid, vcpu=vcpu)
            new = VCPU_ONLINE if up else VCPU_DOWN
            if state == new or (not up and state == VCPU_NEVER_UP):
                return
            self.journal.transact("vcpu_up" if up else "vcpu_down", caller,
                                  [(K_VCPU, domid, vcpu, struct.pack("<I12x", new))])

    # --- Linux's hotplug path ------------------------------------------------------------------------------------
    def _kernel(self, caller: int, domid: int, vcpu: int, call: str) -> SimDomain:
        dom = self.access.permit(caller, domid, call, vcpu=vcpu)
        self.access.vcpu(dom, vcpu, call)
        if dom.bare:
            raise channel_error(call, errno.EINVAL, "the domain is bare: it has no kernel to run CPU hotplug "
                                "(`--xen-only` makes the hypercall alone)", domain=domid, vcpu=vcpu)
        if self.consumers.live(domid, vcpu):
            raise channel_error(call, errno.EBUSY, f"a consumer runs as vCPU {vcpu} (stop it first: Linux runs "
                                "nothing on a CPU going down)", domain=domid, vcpu=vcpu)
        return dom

    def cpu_down(self, caller: int, domid: int, vcpu: int) -> list[str]:
        """Linux's CPU offline of ``vcpu`` (``echo 0 > /sys/devices/system/cpu/cpuN/online``, or the toolstack's
        ``xl vcpu-set`` asking it): the module docstring's steps, each a hypercall.  Returns what it did, a line
        each.  Run again after a kill, it finishes what is left."""
        call = "take down a vCPU of"
        done: list[str] = []
        with self.file.locked():
            dom = self._kernel(caller, domid, vcpu, call)
            mem = dom.mem
            if vcpu == 0:  # xen_pv_cpu_disable(): the boot CPU stays
                raise channel_error(call, errno.EBUSY, "Linux does not take CPU 0 down", domain=domid, vcpu=vcpu)
            if mem.vcpu_state(vcpu) == VCPU_NEVER_UP:
                raise channel_error(call, errno.EINVAL, f"vCPU {vcpu} was never brought up", domain=domid, vcpu=vcpu)
            online = [v for v in range(mem.nr_vcpus) if v != vcpu and mem.vcpu_state(v) == VCPU_ONLINE]
            if not online:
                raise channel_error(call, errno.EBUSY, "no other CPU is online to take its events", domain=domid,
                                    vcpu=vcpu)
            for port in dom.open_ports():  # 1. fixup_irqs()
                ch = self.file.rec(dom, port)
                if ch.notify_vcpu != vcpu or not movable(ch.state, ch.aux, ch.flags):
                    continue
                target = self._target(dom, online)
                was_masked = self._masked(dom, port)
                if not was_masked:
                    self.guest.mask(domid, domid, port)
                self.xen.bind_vcpu(domid, domid, port, target)
                if not was_masked:
                    self.guest.unmask(domid, domid, port)
                done.append(f"moved port {port} to vCPU {target}")
            if mem.vcpu_state(vcpu) == VCPU_ONLINE:  # 2. xen_pv_play_dead()
                self.vcpu_op(domid, domid, vcpu, up=False)
                done.append(f"VCPUOP_down of vCPU {vcpu}")
            for port in self._percpu(dom, vcpu):  # 3. xen_pv_cpu_die()
                self.xen.close_port(domid, domid, port)
                done.append(f"closed port {port}")
        # 4. evtchn_fifo_percpu_deinit(); before Linux fcdf31a7c162 nothing drained them (a replay's switch)
        n = 0 if faults.on(faults.CPU_DEAD_NO_DRAIN) else self.drain(dom, vcpu)
        if n:
            done.append(f"drained {n} event(s) from vCPU {vcpu}'s queues (left pending, not handled)")
        return done

    def cpu_up(self, caller: int, domid: int, vcpu: int) -> list[str]:
        """Linux's CPU online of ``vcpu``: its per-CPU ports bound at the lowest free numbers (a kernel that binds
        them: DOM_PERCPU), a control block registered only if it never had one (FIFO), VCPUOP_up.  Returns what
        it did, a line each."""
        call = "bring up a vCPU of"
        done: list[str] = []
        with self.file.locked():
            dom = self._kernel(caller, domid, vcpu, call)
            mem = dom.mem
            if mem.vcpu_state(vcpu) == VCPU_ONLINE:  # (as Linux's `echo 1 > online` of an online CPU: nothing)
                return done
            if dom.percpu:  # CPUHP_XEN_PREPARE: xen_cpu_up_prepare_pv()
                have = self._percpu(dom, vcpu)
                virqs = {self.file.rec(dom, p).aux for p in have if self.file.rec(dom, p).state == ECS_VIRQ}
                ipis = sum(1 for p in have if self.file.rec(dom, p).state == ECS_IPI)
                for name, chan in percpu_ports(vcpu, dom.kernel_2l):  # (a run cut short: what is missing)
                    if chan.state == ECS_VIRQ:
                        if chan.aux in virqs:
                            continue
                        port = self.binds.bind_virq(domid, domid, chan.aux, vcpu)
                    elif ipis:
                        ipis -= 1
                        continue
                    else:
                        port = self.binds.bind_ipi(domid, domid, vcpu)
                    done.append(f"bound {name} on port {port}")
            if mem.event_abi == ABI_FIFO and mem.cb_offset(vcpu) is None:  # CPUHP_XEN_EVTCHN_PREPARE
                # init_control_block(): the page cleared and the CPU's local heads zeroed first (a block let go
                # by a reset still holds what its queues held)
                at = mem.geometry.cb_pages_offset + vcpu * abi.PAGE_SIZE
                mem.buffer[at: at + abi.PAGE_SIZE] = bytes(abi.PAGE_SIZE)
                with mem.guest(vcpu) as g:
                    for i in range(len(g)):
                        g[i] = 0
                self.binds.init_control(domid, domid, vcpu, CONTROL_BLOCK_GFN + vcpu, 0)
                done.append(f"registered vCPU {vcpu}'s control block")
            if mem.vcpu_state(vcpu) == VCPU_NEVER_UP:  # VCPUOP_initialise (no event-channel state of its own)
                self.journal.transact("vcpu_up", domid, [(K_VCPU, domid, vcpu, struct.pack("<I12x", VCPU_DOWN))])
            self.vcpu_op(domid, domid, vcpu, up=True)
            done.append(f"VCPUOP_up of vCPU {vcpu}")
        return done

    def drain(self, dom: SimDomain, vcpu: int) -> int:
        """__evtchn_fifo_handle_events(cpu, drop): unlink every event on the vCPU's queues, handling none (PENDING
        stays set).  The vCPU's consumer lock is held meanwhile, so a drain killed midway is mended as a killed
        consumer is.  2-level has nothing to drain (Linux's 2-level ops have no percpu_deinit)."""
        mem = dom.mem
        if mem.event_abi != ABI_FIFO or mem.cb_offset(vcpu) is None:
            return 0
        self.consumers.claim(dom, vcpu, "drain the queues of")
        try:
            total = 0
            while True:
                ports, err = dom.engine.consume(vcpu, 0, DRAIN_BATCH)
                total += len(ports)
                if err[0] != 0 or (not ports and not mem.guest_ready(vcpu)):
                    return total
        finally:
            self.consumers.release_one(dom.domid, vcpu)

    # --- helpers -----------------------------------------------------------------------------------------------
    def _target(self, dom: SimDomain, online: list[int]) -> int:
        """select_target_cpu(): the online CPU with the fewest channels bound to it, the lowest on a tie."""
        counts = dict.fromkeys(online, 0)
        for port in dom.open_ports():
            v = self.file.rec(dom, port).notify_vcpu
            if v in counts:
                counts[v] += 1
        return min(online, key=lambda v: (counts[v], v))

    @staticmethod
    def _masked(dom: SimDomain, port: int) -> bool:
        if dom.mem.event_abi == ABI_FIFO:
            word = dom.mem.word(port)
            return word is None or bool(word & abi.WORD_MASKED)
        return dom.mem.l2_bit("mask", port)

    def _percpu(self, dom: SimDomain, vcpu: int) -> list[int]:
        """The vCPU's IPI and per-vCPU VIRQ ports, closed in xen_pv_cpu_die()'s order: the IPIs and VIRQ_DEBUG
        (xen_smp_intr_free, then the irq_work IPI), the timer last (xen_teardown_timer)."""
        ports = []
        for port in dom.open_ports():
            ch = self.file.rec(dom, port)
            if ch.notify_vcpu == vcpu and (ch.state == ECS_IPI or (ch.state == ECS_VIRQ and ch.aux in PER_VCPU_VIRQS)):
                ports.append(port)
        return sorted(ports, key=lambda p: (self.file.rec(dom, p).aux == VIRQS["timer"] and
                                            self.file.rec(dom, p).state == ECS_VIRQ, p))
