"""The facts every reader produces: domains -> ports, and per vCPU its queues.

A field is None when the source does not know it (lsevtchn knows no PENDING
bit, the 'e' dump knows no queue chains), so rules can tell "clear" from
"unknown" and stay silent on what they cannot see.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import MISSING, asdict, dataclass, field, fields

from ..abi import EVTCHN_FIFO_MAX_QUEUES as QUEUES
from ..errors import EvidenceError, MiB, read_input
from ..schema import VERSION


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
    head_from: str | None = None     # where the walk started: "guest" (Linux's local head) or "control block"


HEAD_FROM = ("guest", "control block")


@dataclass
class VcpuFacts:
    vcpu: int
    control_block: bool | None = None
    ready: int | None = None         # the control block's READY bits
    heads: list[int] | None = None   # the control block's head[16]: stale once a queue is drained
    queues: list[QueueFacts] = field(default_factory=list)
    # Linux's local READY copy and per-queue heads (cpu_queue), where the source holds them (the simulator,
    # dump --self); None for frames read from outside the guest, where a queue being consumed looks idle
    guest_ready: int | None = None
    guest_heads: list[int] | None = None
    # 2-level: the vCPU's vcpu_info, where read (evtchn_pending_sel as the words whose bit is set)
    upcall_pending: bool | None = None
    upcall_mask: bool | None = None
    selector_words: list[int] | None = None
    # "online", "down" (VCPUOP_down: its block and queues kept) or "never up", where the source knows (the simulator)
    state: str | None = None

    @property
    def guest_known(self) -> bool:
        return self.guest_ready is not None and self.guest_heads is not None


@dataclass
class CounterFacts:
    """One activity row a domain's kernel keeps (a /proc/interrupts line, a xenbus device's counters) or the
    simulator keeps for a port; cumulative, so two samples give rates.  ``key`` is the same in both."""

    key: str                         # "port 5", "irq 24", "xenbus backend/vif/5/0"
    name: str = ""
    port: int | None = None
    raised: int | None = None        # events Xen raised on the port (simulator)
    handled: int | None = None       # events the kernel handled (deliveries, interrupts, xenbus ``events``)
    spurious: int | None = None      # xenbus ``spurious_events``: events that needed no action
    eoi_delayed: int | None = None   # xenbus ``jiffies_eoi_delayed``: jiffies Linux held the EOI back


@dataclass
class DomainFacts:
    domain: int
    abi: str | None = None           # "FIFO", "2-level" or unknown
    ports: dict[int, PortFacts] = field(default_factory=dict)
    vcpus: dict[int, VcpuFacts] = field(default_factory=dict)
    max_ports: int | None = None     # the event-channel limit, where known
    nr_word_ports: int | None = None  # ports that have an event word (array pages x 1024)
    polling: list[int] | None = None  # vCPUs blocked in SCHEDOP_poll ('e' dump)
    dying: bool | None = None        # XEN_DOMINF_dying: destroyed, its ports closed, still listed
    limit_from: str | None = None    # where max_ports was read (the hypervisor, `xl list -l` ...)
    unreported: list[int] | None = None  # ports EVTCHNOP_status refused (EACCES: Xen's own, on 4.15-4.18)
    counters: list[CounterFacts] = field(default_factory=list)
    # the guest's word size where the source knows it (the simulator's domain table): 32, an x86 compat guest,
    # has 1024 ports on 2-level; None is not known, and the rules then assume 4096, never fewer
    guest_bits: int | None = None


NO_PORTS = "the dump"  # where an 'e' dump without any port line is recorded as unread (edump's, and its rows')


@dataclass
class Unread:
    """Something the source holds that did not become a fact: a skipped line, or a value Xen cannot print.

    doctor never calls evidence with any of these healthy: what was not read may be what is wrong.
    """

    where: str                       # "line 12", or what else locates it
    what: str
    domain: int | None = None        # the domain it is about, where known

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Evidence:
    source: str
    domains: dict[int, DomainFacts] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # notes that do not make the evidence incomplete
    taken_at: float = field(default_factory=time.time)
    unread: list[Unread] = field(default_factory=list)
    listed: list[int] | None = None  # every domain the hypervisor lists (dying ones too); None: not known
    xen_version: str | None = None   # "4.17", where the source says

    def skip(self, where: str, what: str, domain: int | None = None) -> None:
        self.unread.append(Unread(where, what, domain))

    def domain(self, domid: int) -> DomainFacts:
        if domid not in self.domains:
            self.domains[domid] = DomainFacts(domid)
        return self.domains[domid]

    # --- snapshots for --since ---------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"schema": VERSION, "format": "xenevt-evidence", "version": 1, "source": self.source,
                           "taken_at": self.taken_at, "warnings": self.warnings, "listed": self.listed,
                           "xen_version": self.xen_version,
                           "unread": [asdict(u) for u in self.unread],
                           "domains": [_domain_dict(d) for d in self.domains.values()]})

    @classmethod
    def from_json(cls, data: str | bytes, path: str = "<snapshot>") -> Evidence:
        """A snapshot as doctor --save wrote it; anything else is one EvidenceError naming the file and field."""
        return _Snapshot(path).read(data)

    @classmethod
    def load(cls, path: str) -> Evidence:
        """The snapshot in file ``path`` (a regular file, at most SNAPSHOT_CAP bytes)."""
        return cls.from_json(read_input(path, "snapshot", EvidenceError, stdin=False, cap=SNAPSHOT_CAP), path)


def _domain_dict(d: DomainFacts) -> dict:
    """``asdict(d)`` without its deep copies (json.dumps copies anyway): 20,000 ports in ms, not seconds."""
    out = {f.name: getattr(d, f.name) for f in fields(d)}
    out["ports"] = {k: vars(p) for k, p in d.ports.items()}
    out["counters"] = [vars(c) for c in d.counters]
    out["vcpus"] = {k: {f.name: getattr(v, f.name) for f in fields(v)} | {"queues": [vars(q) for q in v.queues]}
                    for k, v in d.vcpus.items()}
    return out


_MAX_INT = 1 << 32
# a snapshot of 200 domains and 20,000 ports is about 6 MiB: 256 MiB is no saved host's, and json.loads of it
# is still bounded (some 10 bytes of objects per byte read)
SNAPSHOT_CAP = 256 * MiB


class _Snapshot:
    """Reads a snapshot field by field against the dataclasses, so a file of the wrong shape is named, not run."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, where: str, problem: str) -> EvidenceError:
        return EvidenceError(f"snapshot {self.path}: {where + ': ' if where else ''}{problem}")

    def read(self, data: str | bytes) -> Evidence:
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as e:
                raise self.fail("", f"not UTF-8 text (byte offset {e.start})") from None
        try:
            raw = json.loads(data)
        except RecursionError:
            raise self.fail("", "not JSON (nested too deeply)") from None
        except ValueError as e:
            raise self.fail("", f"not JSON ({_one_line(str(e))})") from None
        if not isinstance(raw, dict) or raw.get("format") != "xenevt-evidence":
            raise self.fail("", "not a xenevt evidence snapshot (save one with doctor --save)")
        if raw.get("version") != 1 or isinstance(raw.get("version"), bool):
            raise self.fail("", f"unsupported version {_shown(raw.get('version'))}")
        if raw.get("schema", VERSION) != VERSION:  # (a snapshot saved before the schema was named has none)
            raise self.fail("schema", f"unsupported schema {_shown(raw.get('schema'))} (this xenevt reads {VERSION})")
        taken = raw.get("taken_at")
        if isinstance(taken, bool) or not isinstance(taken, (int, float)) or not math.isfinite(taken):
            raise self.fail("taken_at", f"expected a time in seconds, got {_shown(taken)}")
        ev = Evidence(self.value("source", raw.get("source"), "str"), taken_at=float(taken))
        ev.listed = self.value("listed", raw.get("listed"), "list[int] | None")
        ev.xen_version = self.value("xen_version", raw.get("xen_version"), "str | None")
        ev.warnings = [self.value(f"warnings[{i}]", w, "str") for i, w in enumerate(self.seq("warnings",
                                                                                              raw.get("warnings", [])))]
        for i, u in enumerate(self.seq("unread", raw.get("unread", []))):
            ev.unread.append(Unread(**self.record(f"unread[{i}]", u, Unread)))
        for i, d in enumerate(self.seq("domains", raw.get("domains"))):
            where = f"domains[{i}]"
            dom = DomainFacts(**self.record(where, d, DomainFacts, skip=("ports", "vcpus", "counters")))
            for j, c in enumerate(self.seq(f"{where}.counters", d.get("counters", []))):
                dom.counters.append(CounterFacts(**self.record(f"{where}.counters[{j}]", c, CounterFacts)))
            for key, p in self.table(f"{where}.ports", d.get("ports", {})):
                facts = PortFacts(**self.record(f"{where}.ports[{key}]", p, PortFacts))
                dom.ports[facts.port] = facts
            for key, v in self.table(f"{where}.vcpus", d.get("vcpus", {})):
                vw = f"{where}.vcpus[{key}]"
                vf = VcpuFacts(**self.record(vw, v, VcpuFacts, skip=("queues",)))
                if vf.guest_heads is not None and len(vf.guest_heads) != QUEUES:
                    raise self.fail(f"{vw}.guest_heads", f"expected {QUEUES} heads, got {len(vf.guest_heads)}")
                for j, q in enumerate(self.seq(f"{vw}.queues", v.get("queues", []))):
                    qf = QueueFacts(**self.record(f"{vw}.queues[{j}]", q, QueueFacts))
                    if qf.head_from is not None and qf.head_from not in HEAD_FROM:
                        raise self.fail(f"{vw}.queues[{j}].head_from", f"expected one of "
                                        f"{', '.join(map(repr, HEAD_FROM))}, got {_shown(qf.head_from)}")
                    vf.queues.append(qf)
                dom.vcpus[vf.vcpu] = vf
            ev.domains[dom.domain] = dom
        return ev

    def seq(self, where: str, value) -> list:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_shown(value)}")
        return value

    def table(self, where: str, value) -> list:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_shown(value)}")
        return [(_shown(k), v) for k, v in value.items()]

    def record(self, where: str, obj, cls, skip: tuple[str, ...] = ()) -> dict:
        """The dataclass ``cls``'s fields from ``obj``, each checked against its annotation."""
        if not isinstance(obj, dict):
            raise self.fail(where, f"expected an object, got {_shown(obj)}")
        known = {f.name: f for f in fields(cls)}
        for key in obj:
            if key not in known:
                raise self.fail(where, f"unknown field {_shown(key)}")
        out = {}
        for name, f in known.items():
            if name in skip:
                continue
            if name not in obj:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise self.fail(where, f"field {name!r} is missing")
                continue
            kind = f.type
            assert isinstance(kind, str)  # (postponed annotations: this module's __future__ import)
            out[name] = self.value(f"{where}.{name}", obj[name], kind)
        return out

    def value(self, where: str, v, kind: str):
        """One value of the annotated kind (``int | None``, ``list[int]``, ``tuple[int, int] | None`` ...)."""
        if kind.endswith(" | None"):
            if v is None:
                return None
            kind = kind[: -len(" | None")]
        if kind == "str" and isinstance(v, str):
            return v
        if kind == "bool" and isinstance(v, bool):
            return v
        if kind == "int" and _is_int(v):
            return v
        if kind == "list[int]" and isinstance(v, list) and all(_is_int(x) for x in v):
            return v
        if kind == "tuple[int, int]" and isinstance(v, list) and len(v) == 2 and all(_is_int(x) for x in v):
            return tuple(v)
        want = {"str": "a string", "bool": "true or false", "int": f"an integer below {_MAX_INT}",
                "list[int]": "a list of integers", "tuple[int, int]": "a pair of integers"}.get(kind, kind)
        raise self.fail(where, f"expected {want}, got {_shown(v)}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -_MAX_INT < v < _MAX_INT


def _shown(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else f"{text[:32]}...{type(v).__name__}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
