"""Reader of lsevtchn's text (xen-utils): EVTCHNOP_status facts, one line per open port.

Each line is ``%4d: VCPU %u: `` then ``Interdomain (Waiting connection) - Remote
Domain %u``, ``Interdomain (Connected) - Remote Domain %u, Port %u``,
``Physical IRQ %u``, ``Virtual IRQ %u``, ``IPI`` or ``Unknown``
(tools/xcutils/lsevtchn.c).  lsevtchn prints no domain id, so the caller says
which domain the text is about.  Numbers are bounded by what Xen can hold
(bounds.py); a line that cannot be read or a value Xen cannot hold is recorded
as unread, and so is a text with no port line at all.
"""

from __future__ import annotations

import re

from ..abi import DOMID_FIRST_RESERVED, DOMID_MAX, NR_VIRQS, XEN_MAX_VCPUS
from ..abi import EVTCHN_FIFO_MAX_PORT as MAX_PORT
from ..errors import read_input
from .bounds import Impossible, number
from .model import Evidence, EvidenceError, PortFacts

# Anchored, over the line with its trailing blanks already cut: linear in the line's length.
_LINE = re.compile(r" *([0-9]+): VCPU ([0-9]+): (.*)", re.A)
_KINDS = [
    (re.compile(r"Interdomain \(Waiting connection\) - Remote Domain ([0-9]+)", re.A), "unbound"),
    (re.compile(r"Interdomain \(Connected\) - Remote Domain ([0-9]+), Port ([0-9]+)", re.A), "interdomain"),
    (re.compile(r"Physical IRQ ([0-9]+)", re.A), "pirq"),
    (re.compile(r"Virtual IRQ ([0-9]+)", re.A), "virq"),
    (re.compile(r"IPI", re.A), "ipi"),
    (re.compile(r"Unknown", re.A), "unknown"),
]
_SHOWN = 80


def parse(text: str | bytes, domain: int, source: str = "lsevtchn") -> Evidence:
    """Facts about ``domain`` from lsevtchn's text (bytes are read as UTF-8, bad bytes replaced)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    ev = Evidence(source)
    dom = ev.domain(domain)
    lines = 0
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip()
        if not line:
            continue
        m = _LINE.fullmatch(line)
        kind = None
        if m:
            for pattern, name in _KINDS:
                k = pattern.fullmatch(m[3])
                if k:
                    kind = (name, k.groups())
                    break
        if kind is None:
            ev.skip(f"line {n}", f"not an lsevtchn line, skipped: {line.strip()[:_SHOWN]!r}", domain)
            continue
        assert m is not None  # (a kind is read from a matched line only)
        lines += 1
        name, args = kind
        try:
            port = number(m[1], "port", MAX_PORT, why=f"Xen's ports are 0..{MAX_PORT}")
        except Impossible as e:
            ev.skip(f"line {n}", f"{e}; line skipped", domain)
            continue
        facts = PortFacts(port, name)
        # (attribute, text, field, highest, lowest, why): every number bounded by what Xen can hold
        vcpus = f"Xen has at most {XEN_MAX_VCPUS} vCPUs"
        reads = [("vcpu", m[2], "VCPU", XEN_MAX_VCPUS - 1, 0, vcpus)]
        if name == "unbound":
            reads.append(("remote_domain", args[0], "Remote Domain", DOMID_MAX, 0, ""))
        elif name == "interdomain":
            reads += [("remote_domain", args[0], "Remote Domain", DOMID_FIRST_RESERVED - 1, 0,
                       "the peer of a connected channel is a real domain"),
                      ("remote_port", args[1], "Port", MAX_PORT, 1, "")]
        elif name == "pirq":
            reads.append(("pirq", args[0], "Physical IRQ", (1 << 31) - 1, 0, ""))
        elif name == "virq":
            reads.append(("virq", args[0], "Virtual IRQ", NR_VIRQS - 1, 0, f"Xen has {NR_VIRQS} VIRQs"))
        for attr, text_, what, hi, lo, why in reads:
            try:
                setattr(facts, attr, number(text_, what, hi, lo=lo, why=why))
            except Impossible as e:
                ev.skip(f"line {n}", f"port {port}: {e}; that field is not read", domain)
        if port in dom.ports:
            ev.skip(f"line {n}", f"port {port} appears twice; the later line is read", domain)
        dom.ports[port] = facts
    if lines == 0 and text.strip():
        raise EvidenceError(f"{source}: no lsevtchn lines found (expected lines like '   1: VCPU 0: IPI')")
    if lines == 0:
        ev.skip(source, "the text is empty: no port was read", domain)
    return ev


def read(path: str, domain: int) -> Evidence:
    data = read_input(path, "lsevtchn output", EvidenceError)
    return parse(data, domain, f"lsevtchn output {'<stdin>' if path == '-' else path} (domain {domain})")
