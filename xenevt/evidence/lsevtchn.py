"""Reader of lsevtchn's text (xen-utils): EVTCHNOP_status facts, one line per open port.

Each line is ``%4d: VCPU %u: `` then ``Interdomain (Waiting connection) - Remote
Domain %u``, ``Interdomain (Connected) - Remote Domain %u, Port %u``,
``Physical IRQ %u``, ``Virtual IRQ %u``, ``IPI`` or ``Unknown``.  lsevtchn
prints no domain id, so the caller says which domain the text is about.
"""

from __future__ import annotations

import re

from .model import Evidence, EvidenceError, PortFacts

_LINE = re.compile(r"^\s*(?P<port>\d+): VCPU (?P<vcpu>\d+): (?P<what>.*?)\s*$")
_KINDS = [
    (re.compile(r"^Interdomain \(Waiting connection\) - Remote Domain (\d+)$"), "unbound"),
    (re.compile(r"^Interdomain \(Connected\) - Remote Domain (\d+), Port (\d+)$"), "interdomain"),
    (re.compile(r"^Physical IRQ (\d+)$"), "pirq"),
    (re.compile(r"^Virtual IRQ (\d+)$"), "virq"),
    (re.compile(r"^IPI$"), "ipi"),
    (re.compile(r"^Unknown$"), "unknown"),
]


def parse(text: str, domain: int, source: str = "lsevtchn") -> Evidence:
    ev = Evidence(source)
    dom = ev.domain(domain)
    lines = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        m = _LINE.match(raw)
        kind = None
        if m:
            for pattern, name in _KINDS:
                k = pattern.match(m["what"])
                if k:
                    kind = (name, k.groups())
                    break
        if kind is None:
            ev.warnings.append(f"line {number}: not an lsevtchn line, skipped: {raw.strip()[:80]!r}")
            continue
        lines += 1
        name, args = kind
        facts = PortFacts(int(m["port"]), name, vcpu=int(m["vcpu"]))
        if name in ("unbound", "interdomain"):
            facts.remote_domain = int(args[0])
        if name == "interdomain":
            facts.remote_port = int(args[1])
        elif name == "pirq":
            facts.pirq = int(args[0])
        elif name == "virq":
            facts.virq = int(args[0])
        dom.ports[facts.port] = facts
    if lines == 0 and text.strip():
        raise EvidenceError(f"{source}: no lsevtchn lines found (expected lines like '   1: VCPU 0: IPI')")
    return ev


def read(path: str, domain: int) -> Evidence:
    import sys

    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8", errors="replace").read()
    except IsADirectoryError:
        raise EvidenceError(f"lsevtchn output {path} is a directory") from None
    except OSError as e:
        raise EvidenceError(f"cannot read lsevtchn output {path}: {(e.strerror or str(e)).lower()}") from None
    return parse(text, domain, f"lsevtchn output {'<stdin>' if path == '-' else path} (domain {domain})")
