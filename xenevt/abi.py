"""Xen's event-channel ABI: every constant, name and limit xenevt knows of Xen, in one place.

Each value is a fact of a Xen header, named where it is defined (mostly the
public ``xen/include/public/event_channel.h``, FIFO section, and
``xen/include/public/xen.h``); names keep Xen's spelling so they can be
grepped for on both sides.  Nothing here imports the rest of xenevt.
"""

from __future__ import annotations

import struct

# event_word_t bits
EVTCHN_FIFO_PENDING = 31
EVTCHN_FIFO_MASKED = 30
EVTCHN_FIFO_LINKED = 29
EVTCHN_FIFO_BUSY = 28
EVTCHN_FIFO_LINK_BITS = 17
EVTCHN_FIFO_LINK_MASK = (1 << EVTCHN_FIFO_LINK_BITS) - 1
EVTCHN_FIFO_NR_CHANNELS = 1 << EVTCHN_FIFO_LINK_BITS

# priorities: 16 queues per vCPU, 0 is served first
EVTCHN_FIFO_PRIORITY_MAX = 0
EVTCHN_FIFO_PRIORITY_DEFAULT = 7
EVTCHN_FIFO_PRIORITY_MIN = 15
EVTCHN_FIFO_MAX_QUEUES = EVTCHN_FIFO_PRIORITY_MIN + 1

PAGE_SIZE = 4096
EVENT_WORDS_PER_PAGE = PAGE_SIZE // 4
MAX_EVENT_ARRAY_PAGES = EVTCHN_FIFO_NR_CHANNELS // EVENT_WORDS_PER_PAGE  # 128

WORD_PENDING = 1 << EVTCHN_FIFO_PENDING
WORD_MASKED = 1 << EVTCHN_FIFO_MASKED
WORD_LINKED = 1 << EVTCHN_FIFO_LINKED
WORD_BUSY = 1 << EVTCHN_FIFO_BUSY
WORD_UNUSED = ((1 << EVTCHN_FIFO_BUSY) - 1) & ~EVTCHN_FIFO_LINK_MASK  # bits 17..27

# struct evtchn_fifo_control_block { uint32_t ready; uint32_t _rsvd; uint32_t head[16]; }
CONTROL_BLOCK = struct.Struct("<II16I")
CONTROL_BLOCK_SIZE = CONTROL_BLOCK.size  # 72
CONTROL_BLOCK_HEAD_OFFSET = 8

# struct evtchn_init_control { u64 control_gfn; u32 offset; u32 vcpu; u8 link_bits; u8 _pad[7]; }
INIT_CONTROL = struct.Struct("<QIIB7x")

# xen/include/public/xen.h: __HYPERVISOR_event_channel_op, and the EVTCHNOP_* sub-ops (event_channel.h) we issue
HYPERVISOR_event_channel_op = 32
EVTCHNOP_bind_vcpu = 8
EVTCHNOP_set_priority = 13

# event_channel.h: struct evtchn_status's .status, EVTCHNSTAT_closed (0) .. EVTCHNSTAT_ipi (5), by value
STATES = ("closed", "unbound", "interdomain", "pirq", "virq", "ipi")

# xen/include/xen/sched.h: Xen's own channel states (struct evtchn .state), as the 'e' key prints them (s=)
ECS_FREE, ECS_RESERVED, ECS_UNBOUND, ECS_INTERDOMAIN, ECS_PIRQ, ECS_VIRQ, ECS_IPI = range(7)
ECS_NAMES = {ECS_RESERVED: "reserved", ECS_UNBOUND: "unbound", ECS_INTERDOMAIN: "interdomain", ECS_PIRQ: "pirq",
             ECS_VIRQ: "virq", ECS_IPI: "ipi"}  # ECS_FREE is never printed
# xen/common/event_channel.c, evtchn_status(): which EVTCHNSTAT_* each ECS_* reports (free and reserved: closed)
ECS_TO_EVTCHNSTAT = {ECS_FREE: 0, ECS_RESERVED: 0, ECS_UNBOUND: 1, ECS_INTERDOMAIN: 2, ECS_PIRQ: 3, ECS_VIRQ: 4,
                     ECS_IPI: 5}
# xen/include/xen/sched.h: struct evtchn's xen_consumer is XEN_CONSUMER_BITS (3) wide
XEN_MAX_CONSUMER = 7

# xen/include/public/xen.h: VIRQ_* (lowercased: the names the CLI accepts) and NR_VIRQS
VIRQS = {"timer": 0, "debug": 1, "console": 2, "dom_exc": 3, "tbuf": 4, "debugger": 6, "xenoprof": 7,
         "con_ring": 8, "pcpu_state": 9, "mem_event": 10, "argo": 11, "enomem": 12, "xenpmu": 13}
VIRQ_NAMES = {n: name for name, n in VIRQS.items()}
NR_VIRQS = 24
# xen/common/event_channel.c, virq_is_global(): VIRQ_TIMER, VIRQ_DEBUG, VIRQ_XENOPROF, VIRQ_XENPMU are per vCPU
PER_VCPU_VIRQS = {VIRQS[name] for name in ("timer", "debug", "xenoprof", "xenpmu")}

# xen/include/public/xen.h: domid_t is uint16_t; ids from DOMID_FIRST_RESERVED on (DOMID_SELF, DOMID_IO, ...)
# are never a running domain
DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOMID_MAX = 0xFFFF

# most vCPUs a Xen domain can have: x86 PV's MAX_VIRT_CPUS (xen/arch/x86/include/asm/config.h: 8192);
# HVM_MAX_VCPUS and Arm's GUEST_MAX_VCPUS are 128.  Polling masks (%*pbl over max_vcpus bits) stay below it.
XEN_MAX_VCPUS = 8192
# event_channel.h: EVTCHN_2L_NR_CHANNELS with a 64-bit xen_ulong_t
EVTCHN_2L_NR_CHANNELS = 64 * 64
# ... and with a 32-bit guest's (x86 compat: xen_ulong_t is its unsigned long): Xen's BITS_PER_EVTCHN_WORD(d)
# squared, 32 words of 32 bits in its shared_info
EVTCHN_2L_NR_CHANNELS_32 = 32 * 32


def l2_nr_channels(guest_bits: int | None) -> int:
    """The 2-level ABI's ports for a guest of ``guest_bits`` (32 or 64): 1024 for a 32-bit guest, else 4096 (a
    64-bit guest's, and the most any guest has: what to assume where the bitness is not known)."""
    return EVTCHN_2L_NR_CHANNELS_32 if guest_bits == 32 else EVTCHN_2L_NR_CHANNELS

# the largest FIFO port (EVTCHN_FIFO_NR_CHANNELS - 1): dom0's channel limit, and the widest port Xen prints
EVTCHN_FIFO_MAX_PORT = EVTCHN_FIFO_NR_CHANNELS - 1
# tools/libs/light/libxl_create.c: a guest's max_event_channels when its config names none
LIBXL_DEFAULT_EVENT_CHANNELS = 1023


def _flags_text(word: int) -> str:
    return "".join(
        letter if word & bit else "-"
        for letter, bit in (("P", WORD_PENDING), ("M", WORD_MASKED), ("L", WORD_LINKED), ("B", WORD_BUSY))
    )


# the four flags are the word's top bits (BUSY's is the lowest of them): 16 texts, looked up, not joined per port
_FLAGS_TEXT = tuple(_flags_text(top << EVTCHN_FIFO_BUSY) for top in range(16))
assert WORD_PENDING | WORD_MASKED | WORD_LINKED | WORD_BUSY == 15 << EVTCHN_FIFO_BUSY


def word_flags(word: int) -> str:
    """The word's flags as Xen developers write them: ``PMLB`` letters or ``-``."""
    return _FLAGS_TEXT[(word >> EVTCHN_FIFO_BUSY) & 15]


def word_link(word: int) -> int:
    return word & EVTCHN_FIFO_LINK_MASK
