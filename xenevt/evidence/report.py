"""What doctor says: findings (severity, domain, ports, evidence, advice) and the verdict they add up to.

The report model alone, so that a caller reading a verdict (the CLI, a script, a CI gate) imports no rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SEVERITIES = ("info", "warning", "error")
EXIT_CODES = {"healthy": 0, "problems": 3, "inconclusive": 4}
SHOWN_IN_JSON = 20                 # the first unread items and warnings listed; the totals say how many more


@dataclass
class Finding:
    severity: str
    rule: str
    domain: int
    ports: list[int]
    title: str
    evidence: str
    advice: str
    vcpu: int | None = None
    confirm: bool = False  # one sample cannot tell this from a transient state: take a second (--since)
    resembles: str | None = None  # a historical bug whose signature this finding has (history.py)

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        if self.resembles is not None:
            from .history import BUGS

            d["resembles"] = BUGS[self.resembles].as_dict()
        return d


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    checked: dict[int, int] = field(default_factory=dict)  # domain -> ports examined
    warnings: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)        # what the evidence held but did not become facts

    @property
    def verdict(self) -> str:
        """problems (a warning or worse), else inconclusive (something went unread, or a finding needs a
        second sample to be told from a transient state), else healthy."""
        if any(f.severity in ("warning", "error") for f in self.findings):
            return "problems"
        return "inconclusive" if self.unread or self.to_confirm else "healthy"

    @property
    def to_confirm(self) -> int:
        return sum(1 for f in self.findings if f.confirm)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "healthy": self.verdict == "healthy",
                "findings": [f.as_dict() for f in self.findings],
                "checked": {str(d): n for d, n in self.checked.items()},
                "unread": self.unread[:SHOWN_IN_JSON], "unread_total": len(self.unread),
                "need_second_sample": self.to_confirm,
                "warnings": self.warnings[:SHOWN_IN_JSON], "warnings_total": len(self.warnings)}

    def sort(self) -> None:
        """Worst first, then by domain, ports and rule id; a rule's own findings keep the order it made them."""
        order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        self.findings.sort(key=lambda f: (order[f.severity], f.domain, f.ports, f.rule))
