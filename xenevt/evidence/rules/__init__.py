"""doctor's rules, one module per family, each rule registered where it is defined (``registry.check``).

``FAMILIES`` is the order examine() runs them in (a family's checks in its module's order).  Findings are
sorted afterwards and each finding id belongs to one check, so the order is for reproducibility only.
A new rule in a family is one function in that module (plus its test); a new family is a module here and
its name in FAMILIES.
"""

from __future__ import annotations

import importlib

from .registry import CHECKS, RULES, Check, Rule

FAMILIES = (
    "masks",     # a port's pending and mask bits; where a 2-level guest's upcall looks
    "queues",    # FIFO queues: chains, READY and heads, LINKED ports no queue reaches, BUSY, control blocks
    "lifecycle",  # vCPUs down and up: events left on a down vCPU's queues
    "peers",     # the other end: disagreeing, dying or gone; a domain stuck dying
    "limits",    # the event-channel limit
    "versions",  # what a Xen version does not report
    "rates",     # two samples: storms, spurious events, delayed EOIs, ports pending across samples
)

_ordered: list[Check] = []


def checks() -> list[Check]:
    """Every registered check in examine()'s order (the family modules imported on first use)."""
    if not _ordered:
        for family in FAMILIES:
            importlib.import_module(f"{__name__}.{family}")
        rank = {f: i for i, f in enumerate(FAMILIES)}
        _ordered.extend(sorted(CHECKS, key=lambda c: rank[c.family]))  # (stable: a module's own order kept)
    return _ordered


def rules() -> list[Rule]:
    """Every finding id doctor can report, with its family, severities, inputs and doc, in examine()'s order."""
    return [r for c in checks() for r in c.rules.values()]


__all__ = ["FAMILIES", "RULES", "Check", "Rule", "checks", "rules"]
