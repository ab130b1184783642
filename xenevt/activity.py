"""Event activity over time: counters per port (simulator) or per Xen IRQ (/proc/interrupts).

A model below the backends, which produce its rows (as ports.py is for their ports).

A sample is a list of rows with cumulative counts; two samples give rates,
and a row whose count did not move while its port is PENDING is flagged:
an event is waiting and nothing is handling it; a row raising faster than
the storm rate is flagged as a storm (the XSA-332/XSA-391 class: a peer
notifying in a loop).  On Linux each xenbus device (a PV frontend or
backend) also counts its events, the spurious ones (no work found) and the
jiffies its EOI was held back for them (drivers/xen/xenbus/xenbus_probe.c:
``/sys/bus/xen*/devices/*/xenbus/``): :func:`read_xenbus`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .errors import EvidenceError
from .safetext import term

XEN_CHIPS = ("xen-dyn", "xen-dyn-lateeoi", "xen-percpu", "xen-pirq")
STORM_RATE = 10_000  # events/s on one port or IRQ called a storm (doctor --storm-rate, watch --storm-rate)
XENBUS_BUSES = ("xen-backend", "xen")  # dom0's backends, a guest's frontends
XENBUS_STATS = ("events", "spurious_events", "jiffies_eoi_delayed")


@dataclass
class Row:
    key: str                      # "port 5" or "irq 24"
    name: str                     # what the port or IRQ is (state and peer, or the handler's name)
    counts: list[int]             # per vCPU/CPU where known, else one total
    port: int | None = None
    pending: bool | None = None
    masked: bool | None = None
    raised: int | None = None     # notifications Xen raised on the port (simulator)
    spurious: int | None = None   # xenbus spurious_events
    eoi_delayed: int | None = None  # xenbus jiffies_eoi_delayed

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
        names = term(" ".join(tail[1:] if handler else tail))  # drivers name their IRQs from outside text
        rows.append(Row(f"irq {head.strip()}", f"{term(chip)} {term(handler)} {names}".strip(), counts))
    return rows


def read_xenbus(root: str = "/sys") -> list[Row]:
    """Each xenbus device's counters (Linux 5.12 and later), keyed by its xenstore node (``backend/vif/5/0``,
    ``device/vbd/768``); a device without them (an older kernel) or unreadable is left out."""
    rows = []
    for bus in XENBUS_BUSES:
        base = os.path.join(root, "bus", bus, "devices")
        try:
            names = sorted(os.listdir(base))
        except OSError:
            continue
        for name in names:
            dev = os.path.join(base, name)
            values = [_sysfs_int(os.path.join(dev, "xenbus", stat)) for stat in XENBUS_STATS]
            if values[0] is None:
                continue
            node = term(_sysfs_text(os.path.join(dev, "nodename")) or name)  # a xenstore path
            rows.append(Row(f"xenbus {node}", f"xenbus {term(name)}", [values[0]], spurious=values[1],
                            eoi_delayed=values[2]))
    return rows


def _sysfs_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read(256).strip()
    except (OSError, UnicodeDecodeError):
        return None


def _sysfs_int(path: str) -> int | None:
    """A counter as the kernel prints it (``%d``); anything else is not a counter."""
    text = _sysfs_text(path)
    return int(text) if text is not None and text.isascii() and text.isdigit() and len(text) <= 20 else None


@dataclass
class Rate:
    row: Row
    delta: int                    # deliveries since the last sample (the row's counter)
    per_second: float             # deliveries per second
    stalled: bool                 # pending in both samples and not delivered in between: nothing handles it
    storm: bool = False           # raised or delivered faster than the storm rate
    spurious: int = 0             # spurious events since the last sample (xenbus)
    eoi_delayed: int = 0          # jiffies of EOI delay since the last sample (xenbus)
    raised: int = 0               # raises since the last sample (where the source counts them: the simulator)
    raised_per_second: float = 0.0

    @property
    def flags(self) -> list[str]:
        """What is wrong with the row, worst first: storm, stalled, spurious, eoi-delayed."""
        return [name for name, on in (("storm", self.storm), ("stalled", self.stalled),
                                      ("spurious", self.spurious), ("eoi-delayed", self.eoi_delayed)) if on]

    @property
    def urgent(self) -> bool:
        """A row an operator must see before any other: a storm, or an event nothing handles."""
        return self.storm or self.stalled

    @property
    def busiest(self) -> float:
        """The larger of the raise and delivery rates: what "activity" orders by."""
        return max(self.per_second, self.raised_per_second)


def rates(before: Sample, after: Sample, storm_rate: float = STORM_RATE) -> list[Rate]:
    """Per row: the events since ``before`` and their rate (raises where the source counts them: a storm is
    what the sender does, whatever the receiver handled); a counter that went back (a restart) counts 0."""
    dt = max(after.taken_at - before.taken_at, 1e-6)
    old = {r.key: r for r in before.rows}
    out = []
    for r in after.rows:
        prev = old.get(r.key)
        delta = max(r.total - prev.total, 0) if prev is not None else 0
        raised = _grew(r.raised, prev.raised if prev is not None else None)
        stalled = bool(r.pending and prev is not None and prev.pending and delta == 0)
        out.append(Rate(r, delta, delta / dt, stalled, max(delta, raised) / dt >= storm_rate,
                        _grew(r.spurious, prev.spurious if prev is not None else None),
                        _grew(r.eoi_delayed, prev.eoi_delayed if prev is not None else None),
                        raised, raised / dt))
    return out


SORTS = ("port", "activity", "name")


def row_order(key: str) -> tuple:
    """A row key's place in numeric order: ports, then IRQs, by number; then xenbus devices by node."""
    kind, _, rest = key.partition(" ")
    number = int(rest) if rest.isdigit() else -1
    return ({"port": 0, "irq": 1}.get(kind, 2), number, rest)


def order(result: list[Rate], by: str = "port", name=lambda r: r.row.name, domain=lambda r: 0) -> list[Rate]:
    """The rows as a view shows them: urgent ones (storms, events nothing handles) first, then ``by``: "port"
    (numeric, domain by domain), "activity" (the busiest first) or "name" (``name(rate)``, the text shown)."""
    def place(r: Rate) -> tuple:
        key = r.row.key
        if key.startswith("d") and key.split(" ", 1)[0][1:].isdigit():  # "d1 port 5": several domains' rows
            key = key.split(" ", 1)[1]
        return (domain(r), *row_order(key))

    if by == "activity":
        def key(r: Rate) -> tuple:
            return (-r.busiest, *place(r))
    elif by == "name":
        def key(r: Rate) -> tuple:
            return (name(r), *place(r))
    else:
        key = place
    return sorted(result, key=lambda r: (not r.urgent, *key(r)))


def _grew(now: int | None, then: int | None) -> int:
    return max(now - then, 0) if now is not None and then is not None else 0
