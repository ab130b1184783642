"""The registry of doctor's rules: each family module registers its checks where it defines them.

A *check* is one function over one domain (a :class:`Subject`).  It declares, with :func:`check`, every
finding id it may emit (a :class:`Rule`: the id, its severity range and a one-line doc) and what it needs:
walked FIFO queues, two samples.  Its family is the module it is defined in.  ``examine()`` runs the checks
family by family in ``rules.FAMILIES``' order, each family's in its module's order, and sorts the findings
afterwards (``Report.sort``); each id belongs to one check only, so the order checks run in changes nothing
a user sees.  A finding whose id or severity its check did not declare is a bug in that check and raised
as one (:class:`UndeclaredFinding`): the declarations ``--list-rules`` prints cannot drift from the code.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from operator import attrgetter
from typing import TYPE_CHECKING

from ..report import SEVERITIES, Finding, Report

if TYPE_CHECKING:
    from ..model import CounterFacts, DomainFacts, Evidence, PortFacts
    from .walk import Queues


class Needs(enum.Flag):
    """What a check reads beyond the domain's own facts.  QUEUES and TWO_SAMPLES also gate it."""

    NONE = 0
    EARLIER = enum.auto()      # an earlier sample where there is one: "still so N s later" makes it worse
    TWO_SAMPLES = enum.auto()  # runs only with an earlier sample taken before this one (the age > 0)
    QUEUES = enum.auto()       # runs only where the domain's FIFO control blocks were read (its queues walked)
    HOST = enum.auto()         # other domains, or the hypervisor's domain list and version

    @property
    def words(self) -> list[str]:
        return [m.name.lower().replace("_", " ") for m in Needs if m and m in self]  # type: ignore[union-attr]


@dataclass(frozen=True)
class Rule:
    """One finding id as a check declares it; ``family`` and ``needs`` are its check's."""

    id: str
    severities: tuple[str, ...]
    doc: str
    family: str = ""
    needs: Needs = Needs.NONE

    def as_dict(self) -> dict:
        return {"rule": self.id, "family": self.family, "severities": list(self.severities),
                "needs": self.needs.words, "doc": self.doc}


CheckFn = Callable[["Subject"], None]


@dataclass(frozen=True)
class Check:
    run: CheckFn
    family: str
    needs: Needs
    rules: dict[str, Rule] = field(default_factory=dict)
    # the gates as plain booleans: tested for every domain (a Flag's ``in`` is a Python call, 200 domains x checks)
    two_samples: bool = field(init=False)
    queues: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "two_samples", Needs.TWO_SAMPLES in self.needs)
        object.__setattr__(self, "queues", Needs.QUEUES in self.needs)


CHECKS: list[Check] = []           # in registration order; rules.checks() gives examine()'s order
RULES: dict[str, Rule] = {}        # every finding id, as declared


def check(*rules: Rule, needs: Needs = Needs.NONE) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as a check emitting ``rules`` (its family: the module's last name)."""

    def register(fn: CheckFn) -> CheckFn:
        family = fn.__module__.rsplit(".", 1)[-1]
        declared = {}
        for r in rules:
            if r.id in RULES or r.id in declared:
                raise ValueError(f"doctor rule {r.id!r} registered twice")
            if not r.severities or any(s not in SEVERITIES for s in r.severities):
                raise ValueError(f"doctor rule {r.id!r}: severities {r.severities!r} not among {SEVERITIES}")
            declared[r.id] = replace(r, family=family, needs=needs)
        RULES.update(declared)
        CHECKS.append(Check(fn, family, needs, declared))
        return fn

    return register


class UndeclaredFinding(Exception):
    """A check emitted a finding id (or a severity of it) it did not declare: a bug in that check."""


_BY_PORT = attrgetter("port")


class Subject:
    """One domain under examination: its facts, the earlier sample's, and what the checks share (its ports in
    order, its queues walked once, its counters by port), each computed once and only when a check asks."""

    def __init__(self, report: Report, ev: Evidence, dom: DomainFacts, prev: DomainFacts | None, age: float | None,
                 storm_rate: float, stuck_after: float):
        self.report, self.ev, self.dom, self.prev, self.age = report, ev, dom, prev, age
        self.storm_rate, self.stuck_after = storm_rate, stuck_after
        self.ordered: list[PortFacts] = sorted(dom.ports.values(), key=_BY_PORT)  # (once: a host's 40,000 ports)
        self.running: Check | None = None

    @cached_property
    def queues(self) -> Queues | None:
        """The domain's queues judged live or stale and walked live-first (None: no control block was read)."""
        from .walk import Queues, walked

        return Queues(self.dom) if walked(self.dom) else None

    @cached_property
    def before(self) -> Queues | None:
        """The earlier sample's queues, walked the same way."""
        from .walk import Queues, walked

        return Queues(self.prev) if self.prev is not None and walked(self.prev) else None

    @cached_property
    def counters(self) -> dict[int, CounterFacts]:
        return by_port(self.dom.counters)

    @cached_property
    def counters_before(self) -> dict[int, CounterFacts]:
        return by_port(self.prev.counters) if self.prev is not None else {}

    def runs(self, chk: Check) -> bool:
        """Whether ``chk`` has what it needs here."""
        if chk.two_samples and not (self.prev is not None and self.age):
            return False
        return not chk.queues or self.queues is not None

    def add(self, severity: str, rule: str, ports: list[int], title: str, evidence: str, advice: str,
            vcpu: int | None = None, confirm: bool = False) -> None:
        declared = self.running.rules.get(rule) if self.running is not None else None
        if declared is None or severity not in declared.severities:
            raise UndeclaredFinding(f"doctor check {getattr(self.running, 'run', None)!r} emitted {severity} "
                                    f"{rule!r}, which it does not declare")
        self.report.findings.append(Finding(severity, rule, self.dom.domain, ports, title, evidence, advice, vcpu,
                                            confirm))


def by_port(counters: list[CounterFacts]) -> dict[int, CounterFacts]:
    return {c.port: c for c in counters if c.port is not None}
