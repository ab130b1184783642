"""Builds domain images from a readable description: the tests' input writer.

A test says what the guest's FIFO memory holds (``ports={5: "PL->7", ...}``,
queues, READY bits) and gets a DomainMemory with exactly those bytes, instead
of hand-typing words.  Word specs: letters P M L B for the flags, then an
optional ``->N`` for LINK, e.g. ``"PL->12"`` or ``"M"`` or ``""`` (all clear).
"""

from __future__ import annotations

import re

from xenevt import abi
from xenevt.engine import DomainMemory

_SPEC = re.compile(r"^(?P<flags>[PMLB]*)(?:->(?P<link>\d+))?$")
_BITS = {"P": abi.WORD_PENDING, "M": abi.WORD_MASKED, "L": abi.WORD_LINKED, "B": abi.WORD_BUSY}


def word(spec: str) -> int:
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(f"bad word spec {spec!r}")
    value = 0
    for letter in m["flags"]:
        value |= _BITS[letter]
    if m["link"]:
        value |= int(m["link"]) & abi.EVTCHN_FIFO_LINK_MASK
    return value


def domain(
    nr_vcpus: int = 1,
    pages: int = 1,
    max_pages: int | None = None,
    control_blocks: tuple[int, ...] | None = None,
    ports: dict[int, str] | None = None,
    unmasked: tuple[int, ...] = (),
    heads: dict[tuple[int, int], int] | None = None,
    ready: dict[int, int] | None = None,
    chans: dict[int, dict] | None = None,
) -> DomainMemory:
    """A domain with ``pages`` event pages (Linux-initialised: all MASKED).

    ``unmasked`` ports get a clear word (bound and unmasked by the guest);
    ``ports`` sets exact words; ``heads[(vcpu, prio)]`` and ``ready[vcpu]``
    write control-block fields; ``chans[port]`` sets hypervisor fields.
    """
    mem = DomainMemory.create(nr_vcpus=nr_vcpus, max_pages=max_pages or max(pages, 1))
    for _ in range(pages):
        mem.add_page()
    for v in range(nr_vcpus) if control_blocks is None else control_blocks:
        mem.register_control_block(v)
    for port in unmasked:
        mem.set_word(port, 0)
    for port, spec in (ports or {}).items():
        mem.set_word(port, word(spec))
    for (v, prio), port in (heads or {}).items():
        mem.control_block(v)[2 + prio] = port
    for v, bits in (ready or {}).items():
        mem.control_block(v)[0] = bits
    for port, fields in (chans or {}).items():
        mem.update_chan(port, **fields)
    return mem
