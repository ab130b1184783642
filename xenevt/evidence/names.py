"""A name for every port: which device, queue and direction it serves, from what dom0 can read.

Sources, first match wins for a port:
1. xenstore, the port's own node: a PV frontend's ``/local/domain/D/device/T/I/event-channel[-tx|-rx]``
   (``queue-N/…`` with ``multi-queue-num-queues``), ``/local/domain/D/console/port``, ``…/store/port``;
2. xenstore, the peer's node: a backend's (xenconsoled's, xenstored's) port is the interdomain peer of the
   frontend's, which is all xenstore records (the backend directory links the frontend, holds no port);
3. the port's state (EVTCHNOP_status): a VIRQ by name, an IPI and its vCPU, a PIRQ.
Dom0's ``/proc/interrupts`` prints no port for an event-channel IRQ (Linux's Xen irq_chips have no
irq_domain, so no hwirq column), so it cannot name a port by itself; where netback's IRQ name for a vif
queue (``vif5.0-q0-tx``) appears there it is attached to the port xenstore named, which ties watch's IRQ
rows to ports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..abi import EVTCHN_FIFO_NR_CHANNELS, VIRQ_NAMES
from ..engine.layout import FrozenRecord
from ..errors import XenevtError
from ..safetext import term

if TYPE_CHECKING:
    from ..backend.base import Backend
    from ..ports import PortStatus
    from .model import PortFacts

ARROW = "↔"
# (patterns, compiled by re on first use: `list` on a host without xenstore nodes compiles none)
_FRONT = (r"/local/domain/(\d{1,5})/device/([A-Za-z0-9_-]{1,32})/([^/]{1,64})"
          r"(?:/queue-(\d{1,3}))?/event-channel(?:-(tx|rx))?")
_SPECIAL = r"/local/domain/(\d{1,5})/(console|store)/port"
_IRQ_VIF = r"vif(\d+)\.(\d+)-q(\d+)(?:-(tx|rx))?"  # netback: "%s-q%u-tx" of dev "vif%u.%u"
_IRQ_NETFRONT = r"vif([^.\s/-]{1,64})-q(\d+)(?:-(tx|rx))?"  # netfront: "vif%s-q%u-tx", its device id
ROW_KEYS = ("irq ",)  # the activity rows that tie ports to names


class Name(FrozenRecord):
    """What a port serves; immutable.  A frozen record (layout.FrozenRecord), not a frozen dataclass: making the
    dataclass cost every ``list`` and ``status`` 3 ms at import (issue 15), and this module is on their path."""

    __slots__ = _FIELDS = ("kind", "device", "source", "owner", "id", "queue", "direction", "end", "irq")
    kind: str                        # vif, vbd, … (xenstore's device kind), console, xenstore, virq, ipi, pirq
    device: str                      # "vif 0", "console", "VIRQ timer", "IPI vCPU 1"
    source: str                      # where it came from: a xenstore node, the peer's, EVTCHNOP_status
    owner: int | None                # the domain whose device it is (the frontend's)
    id: str | None                   # the device id in xenstore
    queue: int | None
    direction: str | None            # tx, rx
    end: str | None                  # frontend, backend (the peer named it)
    irq: str | None                  # the /proc/interrupts row naming it ("irq 40 vif5.0-q0-tx")

    def __init__(self, kind: str, device: str, source: str, owner: int | None = None, id: str | None = None,
                 queue: int | None = None, direction: str | None = None, end: str | None = None,
                 irq: str | None = None):
        self._set(kind, device, source, owner, id, queue, direction, end, irq)

    def text(self, domain: int | None = None) -> str:
        """``vif 0 queue 0 tx``; a device of another domain than ``domain`` says whose it is."""
        words = ([f"d{self.owner}"] if self.owner is not None and self.owner != domain else []) + [self.device]
        if self.queue is not None:
            words.append(f"queue {self.queue}")
        if self.direction:
            words.append(self.direction)
        return " ".join(words)

    def as_dict(self, domain: int, port: int, peer: tuple[int, int] | None) -> dict:
        d = {"text": label(domain, port, self, peer), "kind": self.kind, "device": self.device, "owner": self.owner,
             "id": self.id, "queue": self.queue, "direction": self.direction, "end": self.end,
             "peer": None if peer is None else {"domain": peer[0], "port": peer[1]}, "source": self.source,
             "irq": self.irq}
        return {k: v for k, v in d.items() if v is not None}


def label(domain: int, port: int, name: Name | None, peer: tuple[int, int] | None = None) -> str:
    """``d5:12 vif 0 queue 0 tx ↔ d0:87``: the port, what it is, its interdomain peer."""
    text = f"d{domain}:{port}" + (f" {name.text(domain)}" if name is not None else "")
    return text + (f" {ARROW} d{peer[0]}:{peer[1]}" if peer is not None else "")


def _port(value: str) -> int | None:
    v = value.strip()
    if v.isascii() and v.isdigit() and len(v) <= 6 and 0 < int(v) < EVTCHN_FIFO_NR_CHANNELS:
        return int(v)
    return None


def from_xenstore(nodes: dict[str, str]) -> tuple[dict[tuple[int, int], Name], list[str]]:
    """(domain, port) -> Name for every port a node records; and a note per node that holds no port."""
    named: dict[tuple[int, int], Name] = {}
    notes: list[str] = []
    for path in sorted(nodes):
        m = re.fullmatch(_FRONT, path)
        s = None if m else re.fullmatch(_SPECIAL, path)
        if not (m or s):
            continue
        port = _port(nodes[path])
        if port is None:
            notes.append(f"xenstore {term(path)} holds {term(repr(nodes[path][:20]))}, not a port")
            continue
        where = f"xenstore {term(path)}"  # a domain chose its device's id: shown escaped wherever a name goes
        if m:
            dom, kind, dev, queue, direction = m.groups()
            kind, dev = term(kind), term(dev)
            name = Name(kind, f"{kind} {dev}", where, int(dom), dev,
                        None if queue is None else int(queue), direction, "frontend")
        else:
            assert s is not None  # (m or s)
            dom, what = s.groups()
            kind = "xenstore" if what == "store" else "console"
            name = Name(kind, kind, where, int(dom), end="frontend")
        named[(int(dom), port)] = name
    return named, notes


class Names:
    """The names of the ports of some domains: ``get(domain, port)``, the peers, and what went unread."""

    def __init__(self):
        self.names: dict[tuple[int, int], Name] = {}
        self.peers: dict[tuple[int, int], tuple[int, int]] = {}
        self.notes: list[str] = []
        self.sources: list[str] = []

    def get(self, domain: int, port: int) -> Name | None:
        return self.names.get((domain, port))

    def label(self, domain: int, port: int) -> str:
        return label(domain, port, self.get(domain, port), self.peers.get((domain, port)))

    def text(self, domain: int, port: int) -> str:
        """What the port is, without its number (a table's name column): empty when unnamed."""
        name = self.get(domain, port)
        return name.text(domain) if name is not None else ""

    def cell(self, domain: int, port: int) -> str:
        """What the port is and its peer, without its own number (a dump's name column): empty when unnamed."""
        name = self.get(domain, port)
        if name is None:
            return ""
        peer = self.peers.get((domain, port))
        return name.text(domain) + (f" {ARROW} d{peer[0]}:{peer[1]}" if peer is not None else "")

    def field(self, domain: int, port: int) -> dict | None:
        """The JSON ``name`` field of a port (null when nothing names it)."""
        name = self.get(domain, port)
        return None if name is None else name.as_dict(domain, port, self.peers.get((domain, port)))

    def fields(self, domain: int, ports: Iterable[int]) -> list[dict | None]:
        """``field`` of each port, in order: a dump's 20,000 words, the unnamed ones without a call each."""
        names, field = self.names, self.field
        return [field(domain, p) if (domain, p) in names else None for p in ports]

    def irq_port(self, domain: int, key: str) -> int | None:
        """The port a /proc/interrupts row (``irq 40``) was tied to, if any."""
        for (d, p), name in self.names.items():
            if d == domain and name.irq is not None and name.irq.rsplit(" ", 1)[0] == key:
                return p
        return None


def build(ports: Iterable[tuple[int, PortStatus | PortFacts]], nodes: dict[str, str] | None = None,
          irq_rows: dict | None = None, nodes_from: str = "xenstore") -> Names:
    """Names for ``ports`` (``(domain, status)``: a PortStatus or PortFacts, anything with port, state,
    remote_domain, remote_port, virq, pirq, vcpu) from xenstore's ``nodes`` and, per domain, its kernel's
    /proc/interrupts rows (``irq_rows``: domain -> activity rows)."""
    out = Names()
    named, notes = from_xenstore(nodes or {})
    out.notes += notes
    if nodes is not None:
        out.sources.append(nodes_from)
    peers, names = out.peers, out.names
    for domain, st in ports:  # (a host's 40,000 ports: the common cases first, nothing called for them)
        key = (domain, st.port)
        state = st.state
        rdom, rport = st.remote_domain, st.remote_port
        peer = (rdom, rport) if state == "interdomain" and rport and rdom is not None else None
        if peer is not None:
            peers[key] = peer
        name = named.get(key) if named else None
        if name is None and peer is not None and peer in named:
            n = named[peer]
            name = Name(n.kind, n.device, f"peer d{peer[0]}:{peer[1]}'s {n.source}", n.owner, n.id, n.queue,
                        n.direction, "backend")
        if name is None and state in _NAMED_BY_STATE:
            name = _from_state(st)
        if name is not None:
            names[key] = name
    for domain, rows in (irq_rows or {}).items():
        if rows:  # (a domain without IRQ rows has nothing to tie: 168 domains' names not walked for none)
            _tie_irqs(out, domain, rows)
    return out


_NAMED_BY_STATE = frozenset(("virq", "ipi", "pirq"))


def _from_state(st) -> Name | None:
    if st.state == "virq" and st.virq is not None:
        return Name("virq", f"VIRQ {VIRQ_NAMES.get(st.virq, st.virq)}", "EVTCHNOP_status (a VIRQ)")
    if st.state == "ipi":
        return Name("ipi", f"IPI vCPU {st.vcpu if st.vcpu is not None else '?'}", "EVTCHNOP_status (an IPI)")
    if st.state == "pirq" and st.pirq is not None:
        return Name("pirq", f"PIRQ {st.pirq}", "EVTCHNOP_status (a PIRQ)")
    return None


def _tie_irqs(out: Names, domain: int, rows) -> None:
    """Netback's IRQ names (vif5.0-q0-tx: the frontend's domain and device id) tied to the backend ports
    xenstore named, and inside a guest netfront's (vif0-q0-tx: its device id) to its own frontend ports: each
    name once."""
    want: dict[tuple[int, str, int, str | None], tuple[int, int]] = {}
    for (d, p), n in out.names.items():
        if d == domain and n.kind == "vif" and n.owner is not None and n.end in ("backend", "frontend"):
            want[(n.owner if n.end == "backend" else -1, n.id or "", n.queue or 0, n.direction)] = (d, p)
    if not want:
        return
    for row in rows:
        if not row.key.startswith("irq "):
            continue
        for word in row.name.replace(",", " ").split():
            m = re.fullmatch(_IRQ_VIF, word)
            if m:
                key = (int(m.group(1)), m.group(2), int(m.group(3)), m.group(4))
            else:
                m = re.fullmatch(_IRQ_NETFRONT, word)
                if not m:
                    continue
                key = (-1, m.group(1), int(m.group(2)), m.group(3))
            if key in want:
                n = out.names[want[key]]
                out.names[want.pop(key)] = Name(n.kind, n.device, n.source, n.owner, n.id, n.queue, n.direction,
                                                n.end, f"{row.key} {term(word)}")


def for_backend(backend: Backend, ports: Iterable[tuple[int, PortStatus | PortFacts]], frontends_of: int | None = None,
                irq_rows: dict | None = None) -> Names:
    """Names for ``ports`` from whatever ``backend`` offers: its xenstore and its kernel's interrupts (or
    ``irq_rows``, per domain, where the caller read them already: the rows whose key starts with one of
    ROW_KEYS); a source it lacks becomes a note, never an error (a port without a name is still a port).  A
    backend whose activity rows are not a kernel's (``kernel_interrupts`` False: the simulator counts per port)
    is not asked for them.  With ``frontends_of`` (a guest that may not ask EVTCHNOP_status of its own ports):
    that domain's ports its xenstore frontend nodes record, named from the nodes alone."""
    ports = list(ports)
    try:
        nodes, where = backend.xenstore()
    except XenevtError as e:
        nodes, where = None, ""
        first: str | None = str(e)
    else:
        first = None
    if frontends_of is not None and nodes:
        from .model import PortFacts

        known = {(d, st.port) for d, st in ports}
        ports += [(d, PortFacts(p, "unknown")) for d, p in sorted(from_xenstore(nodes)[0])
                  if d == frontends_of and (d, p) not in known]
    if irq_rows is None:
        irq_rows = _irq_rows(backend, ports) if backend.kernel_interrupts else {}
    names = build(ports, nodes, irq_rows, where or "xenstore")
    if "cut short" in where:
        names.notes.insert(0, f"some ports may be unnamed: the {where}")
    if first is not None:
        names.notes.insert(0, f"no xenstore names: {first}")
    return names


def _irq_rows(backend, ports) -> dict:
    irq_rows = {}
    for domain in sorted({d for d, _ in ports}):
        try:  # IRQ rows, and a guest's own vif rows (which interface netfront named its IRQs after)
            irq_rows[domain] = [r for r in backend.activity(domain) if r.key.startswith(ROW_KEYS)]
        except (XenevtError, OSError):
            continue
    return irq_rows
