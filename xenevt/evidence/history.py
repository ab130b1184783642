"""Event-channel bugs Xen and Linux really had, and the signatures by which doctor recognises one coming back.

``BUGS`` is the one catalogue (xenevt/replay replays each, the README's table and ``sim replay --list`` print
it).  A *signature* is a predicate over one finding and its domain's facts, registered for one bug: where it holds,
the finding says which historical bug it looks like and which change fixed it.  A signature only ever qualifies a
finding doctor made on its own evidence, so a healthy host (no finding) never hears of an old bug; it must still
be specific enough that another cause of the same finding does not match it (tests/test_replay.py runs every
replay with its fault off and the injected breakages of tests/histories.py, and counts such mix-ups).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import DomainFacts, Evidence
    from .report import Finding, Report


@dataclass(frozen=True)
class Bug:
    """One historical bug: where it was (Xen or Linux), what went wrong, what fixed it, what it left to see."""

    id: str
    where: str
    title: str
    fix: str
    symptom: str

    def as_dict(self) -> dict:
        return {"bug": self.id, "where": self.where, "title": self.title, "fix": self.fix, "symptom": self.symptom}


BUGS: dict[str, Bug] = {}
Signature = Callable[["Finding", "DomainFacts"], bool]
SIGNATURES: list[tuple[str, Signature]] = []


def bug(id: str, where: str, title: str, fix: str, symptom: str) -> Bug:
    """Add a bug to the catalogue (each id once)."""
    if id in BUGS:
        raise ValueError(f"historical bug {id!r} catalogued twice")
    if where not in ("Xen", "Linux"):
        raise ValueError(f"historical bug {id!r}: where {where!r} is neither Xen nor Linux")
    BUGS[id] = b = Bug(id, where, title, fix, symptom)
    return b


def signature(bug_id: str) -> Callable[[Signature], Signature]:
    """Register the decorated predicate as ``bug_id``'s signature."""

    def register(fn: Signature) -> Signature:
        if bug_id not in BUGS:
            raise ValueError(f"signature for {bug_id!r}, which is not catalogued")
        SIGNATURES.append((bug_id, fn))
        return fn

    return register


def resemble(rep: Report, ev: Evidence) -> None:
    """Mark each finding whose signature one catalogued bug has (the first that matches)."""
    from . import bugs  # noqa: F401  (the catalogue and its signatures, on first use)

    for f in rep.findings:
        dom = ev.domains.get(f.domain)
        if dom is None:
            continue
        for bug_id, fn in SIGNATURES:
            if fn(f, dom):
                f.resembles = bug_id
                break
