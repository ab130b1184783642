"""Return codes and flag bits of the engine, as in csrc/xenevt_fifo_api.h.

Kept in Python so that the reference engine and the decoders work without
the compiled module; tests/test_codes.py checks each value against it.
"""

from __future__ import annotations

import errno
from enum import IntEnum, IntFlag

from ..errors import ChannelError, channel_error
from .layout import CHAN_DEFERRED, CHAN_XEN  # noqa: F401  (xe_chan.flags, declared beside xe_chan: re-exported)


class Err(IntEnum):
    OK = 0
    PORT = -1
    VCPU = -2
    RANGE = -3
    NO_CONTROL = -4
    ZERO_HEAD = -5
    UNLINKED = -6
    BUSY = -7
    STATE = -8
    SCAN = -9  # (2-level consume) Linux's saved scan position out of range


ERR_TEXT = {
    Err.PORT: "port out of range",
    Err.VCPU: "vCPU out of range",
    Err.RANGE: "no event word (past the event array or on an unmapped page)",
    Err.NO_CONTROL: "vCPU has no control block",
    Err.ZERO_HEAD: "READY bit set but the queue head is 0",
    Err.UNLINKED: "queue points at a word that is not LINKED (cycle or corruption)",
    Err.BUSY: "event word stayed BUSY",
    Err.STATE: "corrupt hypervisor state",
    Err.SCAN: "2-level scan position out of range (corrupt guest state; reset to word 0, bit 0)",
}


def engine_error(code: int, call: str, domain: int, port: int | None = None, vcpu: int | None = None,
                 detail: str = "", refused: bool = False) -> ChannelError:
    """The one place an engine return code becomes our error: ``cannot CALL port P of domain D: why (EBUSY|EIO)``.

    A word that stayed BUSY is contention (EBUSY, try again); anything else is a queue or word the guest's
    checks dropped (EIO).  ``refused``: the engine refused memory the open's checks should have caught, said
    as such.  ``detail`` adds where (the vCPU, the priority).
    """
    try:
        text = ERR_TEXT[Err(code)]
    except (ValueError, KeyError):
        text = f"unknown code {code}"
    eno = errno.EBUSY if code == Err.BUSY else errno.EIO
    if refused:
        text = f"engine refused: {text} (code {code}; corrupt state?)"
    return channel_error(call, eno, text + detail, domain=domain, port=port, vcpu=vcpu)


class SP(IntFlag):
    """What raising (or unmasking) an event did: xe_hv_set_pending's result."""

    WAS_PENDING = 1
    LINKED = 2
    NEW_HEAD = 4
    UPCALL = 8
    DEFERRED = 16
    NO_CONTROL = 32
    LINK_GAVE_UP = 64
    MASKED = 128
    ALREADY_LINKED = 256
    NOT_PENDING = 512
    MOVED = 1024


class Consume(IntFlag):
    ACK = 1
    MASK = 2


class Walk(IntEnum):
    EMPTY = 0
    END = 1
    STALE = 2
    RANGE = 3
    UNLINKED = 4
    CYCLE = 5
    SHARED = 6
    TRUNCATED = 7
    NO_CONTROL = 8

