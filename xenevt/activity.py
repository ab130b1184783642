"""Event activity over time: counters per port (simulator) or per Xen IRQ (/proc/interrupts).

A model below the backends, which produce its rows (as ports.py is for their ports).

A sample is a list of rows with cumulative counts; two samples give rates,
and a row whose count did not move while its port is PENDING is flagged:
an event is waiting and nothing is handling it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .errors import EvidenceError

XEN_CHIPS = ("xen-dyn", "xen-dyn-lateeoi", "xen-percpu", "xen-pirq")


@dataclass
class Row:
    key: str                      # "port 5" or "irq 24"
    name: str                     # what the port or IRQ is (state and peer, or the handler's name)
    counts: list[int]             # per vCPU/CPU where known, else one total
    port: int | None = None
    pending: bool | None = None
    masked: bool | None = None
    raised: int | None = None     # notifications Xen raised on the port (simulator)

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass
class Sample:
    source: str
    rows: list[Row]
    taken_at: float = field(default_factory=time.monotonic)


def parse_interrupts(text: str, path: str = "/proc/interrupts") -> list[Row]:
    """The Xen rows of /proc/interrupts: ``IRQ: count per CPU  chip  -handler  action[, action]``."""
    lines = text.splitlines()
    if not lines or not lines[0].split() or not all(t.startswith("CPU") for t in lines[0].split()):
        raise EvidenceError(f"{path}: no CPU header line (not /proc/interrupts?)")
    ncpu = len(lines[0].split())
    rows = []
    for number, line in enumerate(lines[1:], 2):
        head, sep, rest = line.partition(":")
        if not sep or not head.strip().isdigit():
            continue  # NMI, LOC, ERR...: not device interrupts
        fields = rest.split()
        if len(fields) < ncpu + 1:
            continue
        # the kernel prints %10u: ASCII digits only (int() would take "1_000", "-5" and other scripts' digits)
        if not all(x.isascii() and x.isdigit() and len(x) <= 20 for x in fields[:ncpu]):
            raise EvidenceError(f"{path}: line {number}: unreadable counts")
        counts = [int(x) for x in fields[:ncpu]]
        chip, tail = fields[ncpu], fields[ncpu + 1:]
        base = next((x for x in sorted(XEN_CHIPS, key=len, reverse=True)
                     if chip == x or chip.startswith(x + "-")), None)
        if base is None:
            continue
        if chip != base:  # chip and handler printed without the hwirq gap: "xen-percpu-ipi"
            tail = ["-" + chip[len(base) + 1:]] + tail
            chip = base
        handler = tail[0].lstrip("-") if tail and tail[0].startswith("-") else ""
        names = " ".join(tail[1:] if handler else tail)
        rows.append(Row(f"irq {head.strip()}", f"{chip} {handler} {names}".strip(), counts))
    return rows


@dataclass
class Rate:
    row: Row
    delta: int
    per_second: float
    stalled: bool


def rates(before: Sample, after: Sample) -> list[Rate]:
    dt = max(after.taken_at - before.taken_at, 1e-6)
    old = {r.key: r for r in before.rows}
    out = []
    for r in after.rows:
        prev = old.get(r.key)
        delta = r.total - prev.total if prev is not None else 0
        stalled = bool(r.pending and prev is not None and prev.pending and delta == 0)
        out.append(Rate(r, delta, delta / dt, stalled))
    return out
