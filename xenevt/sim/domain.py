"""A domain of the simulated host, and what its guest kernel does to its event channels at boot.

Both the file's creation (create.py) and Xen's reset (effects.py: the kernel that follows a reset boots again)
use ``kernel_boot``; the open file (store.py) makes one SimDomain per domain table entry.
"""

from __future__ import annotations

from .. import abi
from ..abi import ECS_FREE, ECS_IPI, ECS_RESERVED, ECS_VIRQ, VIRQS
from ..engine import Chan, DomainMemory, engine_for, faults, twolevel_for
from ..engine.layout import ABI_2L, ABI_FIFO, L2_WORDS, VCPU_ONLINE
from .statefile import (
    DOM_BARE,
    DOM_DYING,
    DOM_GONE,
    DOM_GUEST_32,
    DOM_KERNEL_2L,
    DOM_PAUSED,
    DOM_PERCPU,
    DOM_PRIVILEGED,
)

_OPEN_STATES = bytes(0 if b in (ECS_FREE, ECS_RESERVED) else 1 for b in range(256))
KERNEL_ABIS = {"fifo": ABI_FIFO, "2l": ABI_2L}  # what a simulated Linux kernel may choose at boot (sim init --abi)


# What Linux binds per CPU, in its order (a PV guest, Linux 6.1, booted with nopvspin as xen-ci's guests are: no
# spinlock kicker): xen_cpu_up_prepare_pv() binds VIRQ_TIMER (xen_setup_timer), then xen_smp_intr_init() the
# reschedule, call-function, [VIRQ_DEBUG: 2-level kernels only, since Linux 5.10] and call-function-single IPIs,
# then xen_smp_intr_init_pv() the irq_work IPI.  The boot CPU binds the same, its timer in start_kernel().
PERCPU_NAMES = ("timer", "resched", "callfunc", "debug", "callfuncsingle", "irqwork")


def percpu_ports(vcpu: int, two_level: bool) -> list[tuple[str, Chan]]:
    """The per-CPU ports Linux binds for CPU ``vcpu``, named as /proc/interrupts names them, in Linux's order."""
    out = []
    for name in PERCPU_NAMES:
        if name == "debug" and not two_level:
            continue
        virq = {"timer": VIRQS["timer"], "debug": VIRQS["debug"]}.get(name)
        chan = Chan(state=ECS_IPI, notify_vcpu=vcpu) if virq is None else \
            Chan(state=ECS_VIRQ, aux=virq, notify_vcpu=vcpu)
        out.append((f"{name}{vcpu}", chan))
    return out


def boot_percpu(mem: DomainMemory, two_level: bool) -> None:
    """A fresh image's per-CPU binds at boot, CPU 0 first then each online CPU as it comes up, each at the lowest
    free port (a fresh table: the next one), enabled as Linux's bind leaves it (unmasked, nothing pending)."""
    port = 1
    for v in range(mem.nr_vcpus):
        if mem.vcpu_state(v) != VCPU_ONLINE:
            continue
        for _, chan in percpu_ports(v, two_level):
            while mem.chan(port).state != ECS_FREE:
                port += 1
            mem.set_chan(port, chan)
            mem.grow_valid(port)
            if two_level:
                with mem.l2_mask() as mask:
                    mask[port // 64] &= ~(1 << port % 64)
            else:
                word = mem.word(port)
                assert word is not None  # (page 0 holds the boot CPUs' ports: 6 per CPU at most)
                mem.set_word(port, word & ~abi.WORD_MASKED)


def kernel_boot(mem: DomainMemory, two_level: bool) -> None:
    """What a simulated Linux kernel does to its event channels at boot (and after EVTCHNOP_reset, as the kernel
    that follows one does): FIFO, a zeroed control block per online vCPU (EVTCHNOP_init_control: a vCPU never
    brought up has none) then one MASKED array page; 2-level, no hypercall: it masks every port
    (xen_evtchn_mask_all(), all 4096) and its upcall scan starts at word 0, bit 0.  Idempotent: a reset redone
    after a kill runs it again."""
    if two_level:
        with mem.l2_mask() as mask:
            for i in range(L2_WORDS):
                mask[i] = (1 << 64) - 1
        for v in range(mem.nr_vcpus):
            with mem.l2_scan(v) as scan:
                scan[0] = scan[1] = 0
        return
    for v in range(mem.nr_vcpus):
        if mem.vcpu_state(v) != VCPU_ONLINE:
            continue
        mem.register_control_block(v)
        view = mem.control_block(v)
        assert view is not None  # (registered just above)
        with view as cb:
            for i in range(len(cb)):
                cb[i] = 0
    mem.set_event_abi(ABI_FIFO)
    mem.add_page()


class SimDomain:
    """One domain of the host: its memory, engine and Xen-side facts."""

    def __init__(self, domid: int, flags: int, mem: DomainMemory, entry: memoryview | None = None):
        self.domid = domid
        self.privileged = bool(flags & DOM_PRIVILEGED)
        self.bare = bool(flags & DOM_BARE)
        self.kernel_2l = bool(flags & DOM_KERNEL_2L)  # its kernel chose 2-level: after a reset it stays there
        self.percpu = bool(flags & DOM_PERCPU)  # its kernel binds Linux's per-CPU ports (percpu_ports)
        self.guest_32 = bool(flags & DOM_GUEST_32)  # a 32-bit (x86 compat) guest: 1024 ports on 2-level
        self._entry = entry  # the domain table entry's words (domid, flags, ...): flags change (pause)
        self.mem = mem
        self._engine = self._l2 = None  # made on first use: `list` and `status` of 168 domains run neither
        self.free_hint = 1  # every port below it is in use, while mem.frees == frees_seen
        self.frees_seen = -1
        self.table_index = 0  # its entry in the file's domain table

    @property
    def engine(self):
        """The FIFO engine over the domain's memory (engine_for)."""
        if self._engine is None:
            self._engine = engine_for(self.mem)
        return self._engine

    @property
    def l2(self):
        """The 2-level engine over the domain's memory (twolevel_for)."""
        if self._l2 is None:
            self._l2 = twolevel_for(self.mem)
        return self._l2

    def close_engines(self) -> None:
        """Let go of the engines made (their views of the mapping) and forget them."""
        for e in (self._engine, self._l2):
            if e is not None:
                e.close()
        self._engine = self._l2 = None

    def max_evtchns(self) -> int:
        """Xen's max_evtchns(d): the ports the domain's ABI has room for (a bind also stops at its own limit,
        mem.nr_chans).  FIFO's 131072; 2-level's one bit per port in the guest's words, 64 x 64, or 32 x 32 for a
        32-bit guest: decided from its bitness at each use, as Xen does since 62bcdc4edb (XSA-342).  Before, Xen
        recorded the limit when it created the domain, its bitness not yet known, as a 64-bit guest's 4096
        (``faults.COMPAT_LIMIT_AT_CREATE``; Xen then recorded it again only when EVTCHNOP_reset took a domain
        back from FIFO, which the replay's guest never is)."""
        if self.mem.event_abi == ABI_FIFO:
            return abi.EVTCHN_FIFO_NR_CHANNELS
        if self.guest_32 and faults.on(faults.COMPAT_LIMIT_AT_CREATE):
            return abi.EVTCHN_2L_NR_CHANNELS
        return abi.l2_nr_channels(32 if self.guest_32 else 64)

    @property
    def paused(self) -> bool:
        return self._entry is not None and bool(self._entry[1] & DOM_PAUSED)

    @property
    def dying(self) -> bool:
        """Destroyed but still listed (``sim destroy --dying``): every port closed, none can be allocated."""
        return self._entry is not None and bool(self._entry[1] & DOM_DYING)

    @property
    def gone(self) -> bool:
        return self._entry is not None and bool(self._entry[1] & DOM_GONE)

    def set_paused(self, paused: bool) -> None:
        """One aligned store of the entry's flags word (callers hold the host lock)."""
        self._set_flag(DOM_PAUSED, paused)

    def set_destroyed(self, dying: bool) -> None:
        """Dying, or gone: one aligned store of the flags word, so a kill leaves the one or the other."""
        if self._entry is not None:
            self._entry[1] = (self._entry[1] & ~(DOM_DYING | DOM_GONE)) | (DOM_DYING if dying else DOM_GONE)

    def open_ports(self) -> list[int]:
        """Ports whose channel is neither free nor reserved, found by a search of the state bytes."""
        states = self.mem.chan_states(0, self.mem.nr_chans).translate(_OPEN_STATES)
        out, port = [], states.find(1, 1)
        while port >= 0:
            out.append(port)
            port = states.find(1, port + 1)
        return out

    def nr_open(self) -> int:
        """How many ports open_ports finds, counted by the same search without a list (info: every domain)."""
        return self.mem.chan_states(0, self.mem.nr_chans).translate(_OPEN_STATES).count(1, 1)

    def _set_flag(self, flag: int, on: bool) -> None:
        if self._entry is not None:
            self._entry[1] = (self._entry[1] & ~flag) | (flag if on else 0)


