"""What Xen's text can show: its limits, and one bounded reader of the numbers in it.

Python's ``int()`` takes Unicode digits (a superscript), underscores, spaces and
any length (a 5,000-digit bignum); Xen's printf writes ASCII digits only, so
every number read from outside text goes through :func:`number`, which also
says which field held a value Xen cannot print.
"""

from __future__ import annotations

from ..abi import EVTCHN_FIFO_NR_CHANNELS

# xen/include/public/xen.h: domain ids from here on are DOMID_SELF, DOMID_IO ... never a running domain
DOMID_FIRST_RESERVED = 0x7FF0
DOMID_MAX = 0xFFFF                 # domid_t is uint16_t
# xen/include/public/xen.h
NR_VIRQS = 24
# most vCPUs a Xen domain can have: x86 PV's MAX_VIRT_CPUS (xen/arch/x86/include/asm/config.h: 8192);
# HVM_MAX_VCPUS and Arm's GUEST_MAX_VCPUS are 128.  Polling masks (%*pbl over max_vcpus bits) stay below it.
XEN_MAX_VCPUS = 8192
# xen/include/xen/sched.h: struct evtchn's xen_consumer is XEN_CONSUMER_BITS (3) wide
XEN_MAX_CONSUMER = 7
# xen/include/public/event_channel.h: EVTCHN_2L_NR_CHANNELS with a 64-bit xen_ulong_t
EVTCHN_2L_NR_CHANNELS = 64 * 64
# ECS_* (xen/include/xen/sched.h): ECS_FREE (0) is never printed
ECS_NAMES = {1: "reserved", 2: "unbound", 3: "interdomain", 4: "pirq", 5: "virq", 6: "ipi"}
MAX_PORT = EVTCHN_FIFO_NR_CHANNELS - 1
INT_MAX = (1 << 31) - 1
MAX_DIGITS = 11                    # enough for any 32-bit value printed by %d or %u, with room for a zero pad


class Impossible(ValueError):
    """A field holds a value Xen cannot print; the text names the field and the value."""


def number(text: str, field: str, hi: int, lo: int = 0, why: str = "") -> int:
    """``text`` as an integer in [lo, hi]: ASCII digits (one leading '-' only when lo < 0), at most MAX_DIGITS."""
    digits = text[1:] if text[:1] == "-" and lo < 0 else text
    if not digits or len(digits) > MAX_DIGITS or not (digits.isascii() and digits.isdigit()):
        shown = text if len(text) <= 20 else f"{text[:12]}... ({len(text)} characters)"
        raise Impossible(f"{field} {shown!r} is not a number Xen prints")
    value = int(text)
    if not lo <= value <= hi:
        raise Impossible(f"{field} {value} is out of range" + (f" ({why})" if why else f" ({lo}..{hi})"))
    return value
