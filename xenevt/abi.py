"""Xen's event-channel ABI: constants and byte layouts.

Every value here is a fact of Xen's public header
``xen/include/public/event_channel.h`` (FIFO section unless noted); names
keep Xen's spelling so they can be grepped for on both sides.
"""

from __future__ import annotations

import struct
from enum import IntEnum

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

# EVTCHNOP_* sub-ops of __HYPERVISOR_event_channel_op (32)
HYPERVISOR_EVENT_CHANNEL_OP = 32


class EvtchnOp(IntEnum):
    BIND_INTERDOMAIN = 0
    BIND_VIRQ = 1
    BIND_PIRQ = 2
    CLOSE = 3
    SEND = 4
    STATUS = 5
    ALLOC_UNBOUND = 6
    BIND_IPI = 7
    BIND_VCPU = 8
    UNMASK = 9
    RESET = 10
    INIT_CONTROL = 11
    EXPAND_ARRAY = 12
    SET_PRIORITY = 13


class EvtchnStat(IntEnum):
    """EVTCHNSTAT_* of struct evtchn_status."""

    CLOSED = 0
    UNBOUND = 1
    INTERDOMAIN = 2
    PIRQ = 3
    VIRQ = 4
    IPI = 5


def word_flags(word: int) -> str:
    """The word's flags as Xen developers write them: ``PMLB`` letters or ``-``."""
    return "".join(
        letter if word & bit else "-"
        for letter, bit in (("P", WORD_PENDING), ("M", WORD_MASKED), ("L", WORD_LINKED), ("B", WORD_BUSY))
    )


def word_link(word: int) -> int:
    return word & EVTCHN_FIFO_LINK_MASK
