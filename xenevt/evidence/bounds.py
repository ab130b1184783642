"""One bounded reader of the numbers in Xen's text (the limits it checks against are abi.py's).

Python's ``int()`` takes Unicode digits (a superscript), underscores, spaces and
any length (a 5,000-digit bignum); Xen's printf writes ASCII digits only, so
every number read from outside text goes through :func:`number`, which also
says which field held a value Xen cannot print.
"""

from __future__ import annotations

# Xen's own limits (domains, ports, vCPUs, VIRQs) are in abi.py; these are printf's
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
