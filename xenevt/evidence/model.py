"""The facts every reader produces: domains -> ports, and per vCPU its queues.

A field is None when the source does not know it (lsevtchn knows no PENDING
bit, the 'e' dump knows no queue chains), so rules can tell "clear" from
"unknown" and stay silent on what they cannot see.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from ..errors import XenevtError


class EvidenceError(XenevtError):
    """Evidence that cannot be read: the message names the file and line or offset."""


@dataclass
class PortFacts:
    port: int
    state: str                       # closed, reserved, unbound, interdomain, pirq, virq, ipi
    vcpu: int | None = None          # notify vCPU
    remote_domain: int | None = None
    remote_port: int | None = None
    virq: int | None = None
    pirq: int | None = None
    priority: int | None = None
    pending: bool | None = None
    masked: bool | None = None
    linked: bool | None = None
    busy: bool | None = None
    link: int | None = None
    xen_consumer: int | None = None
    selector: bool | None = None     # 2-level: the vCPU's pending-selector bit for this port's word


@dataclass
class QueueFacts:
    vcpu: int
    priority: int
    head: int
    chain: list[int]
    status: str                      # the walker's: end, stale, range, unlinked, cycle, shared, truncated, empty
    ready: bool
    bad_port: int | None = None
    other_queue: tuple[int, int] | None = None


@dataclass
class VcpuFacts:
    vcpu: int
    control_block: bool | None = None
    ready: int | None = None
    heads: list[int] | None = None
    queues: list[QueueFacts] = field(default_factory=list)


@dataclass
class DomainFacts:
    domain: int
    abi: str | None = None           # "FIFO", "2-level" or unknown
    ports: dict[int, PortFacts] = field(default_factory=dict)
    vcpus: dict[int, VcpuFacts] = field(default_factory=dict)
    max_ports: int | None = None     # the event-channel limit, where known
    nr_word_ports: int | None = None  # ports that have an event word (array pages x 1024)
    polling: list[int] | None = None  # vCPUs blocked in SCHEDOP_poll ('e' dump)


@dataclass
class Evidence:
    source: str
    domains: dict[int, DomainFacts] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)

    def domain(self, domid: int) -> DomainFacts:
        if domid not in self.domains:
            self.domains[domid] = DomainFacts(domid)
        return self.domains[domid]

    # --- snapshots for --since ---------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"format": "xenevt-evidence", "version": 1, "source": self.source,
                           "taken_at": self.taken_at, "warnings": self.warnings,
                           "domains": [asdict(d) for d in self.domains.values()]})

    @classmethod
    def from_json(cls, text: str, path: str = "<snapshot>") -> Evidence:
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise EvidenceError(f"snapshot {path}: not JSON ({e})") from None
        if not isinstance(raw, dict) or raw.get("format") != "xenevt-evidence":
            raise EvidenceError(f"snapshot {path}: not a xenevt evidence snapshot (save one with doctor --save)")
        if raw.get("version") != 1:
            raise EvidenceError(f"snapshot {path}: unsupported version {raw.get('version')!r}")
        try:
            ev = cls(raw["source"], taken_at=float(raw["taken_at"]), warnings=list(raw.get("warnings", [])))
            for d in raw["domains"]:
                dom = DomainFacts(**{k: v for k, v in d.items() if k not in ("ports", "vcpus")})
                dom.ports = {int(p["port"]): PortFacts(**p) for p in d["ports"].values()}
                for v in d["vcpus"].values():
                    qs = [QueueFacts(**{**q, "other_queue": tuple(q["other_queue"]) if q.get("other_queue") else None})
                          for q in v.pop("queues", [])]
                    dom.vcpus[int(v["vcpu"])] = VcpuFacts(**v, queues=qs)
                ev.domains[dom.domain] = dom
        except (KeyError, TypeError, ValueError) as e:
            raise EvidenceError(f"snapshot {path}: malformed ({type(e).__name__}: {e})") from None
        return ev
