"""Histories of correct guests on the simulator, for measuring doctor's precision and recall.

A history is a random sequence of what Xen and correct guest kernels do — bind
(unbound, interdomain, VIRQ, IPI), send, consume part of a queue, mask, unmask,
set-priority and bind-vcpu while events are queued, close, and binds that make
the guest add event-array pages — drawn from a seed, so any failure replays.
``settle`` is the guest moving on: every port unmasked and every queue drained.

The same on 2-level domains (``two_level``): two Linux guests booted on Xen's
first ABI (every port masked, as xen.fifo_events=0 leaves them) and a bare
domain (nothing masked, as Xen creates it), the same operations but
set-priority (which 2-level has not), a vCPU
move done as Linux does it (mask, EVTCHNOP_bind_vcpu, unmask, so the event
is raised again on its new vCPU), and the guest's upcall scan as consume.
Every guest kernel binds Linux's per-CPU ports (VIRQ_TIMER, the IPIs), and takes
its CPU 1 down and up as Linux does (``hotplug``: the dying CPU first handles
what is queued for it, as it runs until interrupts go off); a correct guest
binds, moves and consumes on online vCPUs only.

``inject`` then breaks such a history in one of the ways doctor knows, by
writing the simulator's memory as a buggy guest, a lost write or a corrupted
table would, by destroying a peer domain (sim destroy, gone or dying), by an
unbound port for a domain that never existed, by a peer flooding a port
between two samples, by a vCPU that stops taking events, by a vCPU taken down
behind its kernel's back with an event queued on it, or by a port bound to a
vCPU that was never brought up, and says which
finding (rule, domain, port) must name it.
``measure`` runs both over a process pool; ``python -m tests.histories``
prints the figures (``make doctor-check``).
"""

from __future__ import annotations

import argparse
import collections
import errno
import multiprocessing
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from xenevt import abi
from xenevt.abi import ECS_FREE, ECS_IPI
from xenevt.backend import select_backend
from xenevt.dump import build_dump
from xenevt.engine import DomainMemory, faults
from xenevt.engine.layout import ABI_FIFO, CB_STATE_OFFSET, VCPU_NEVER_UP, VCPU_ONLINE
from xenevt.errors import ChannelError
from xenevt.evidence import collect, doctor
from xenevt.evidence.model import Evidence
from xenevt.sim.host import FILE_NAME, LOCK_NAME, STATS_NAME, XENSTORE_NAME, SimHost, create_host, lateeoi_name

DOMAINS, VCPUS = 3, 2
STEPS = 40
FILL = 0.75        # "many" binds stop here: with the rest of a history a domain stays below 80% of its limit
Q = abi.EVTCHN_FIFO_MAX_QUEUES
REFUSALS = (errno.EINVAL, errno.ENOSPC, errno.EEXIST, errno.ENOENT, errno.EBUSY, errno.ENOTCONN)


# --- building a history --------------------------------------------------------------------------------------
_templates: dict[bool, bytes] = {}


def fresh_host(state_dir: str, two_level: bool = False) -> None:
    """A just-booted host in ``state_dir``: a copy of one made once per process (create_host costs ~30 ms).
    ``two_level``: Linux guests on 2-level (domains 0 and 1, 1 a 32-bit guest: 1024 ports) and a bare domain (2),
    so on 2-level as Xen creates it."""
    if two_level not in _templates:
        with tempfile.TemporaryDirectory(prefix="xenevt-histories-") as tdir:
            create_host(tdir, nr_domains=DOMAINS, nr_vcpus=VCPUS, force=True, percpu=True,
                        **({"abi": "2l", "bare": (DOMAINS - 1,), "guest_32": (1,)} if two_level else {}))
            with open(os.path.join(tdir, FILE_NAME), "rb") as f:
                _templates[two_level] = f.read()
    os.makedirs(state_dir, exist_ok=True)
    for name in (STATS_NAME, LOCK_NAME, XENSTORE_NAME, *(lateeoi_name(d) for d in range(DOMAINS))):
        try:
            os.unlink(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass
    with open(os.path.join(state_dir, FILE_NAME), "wb") as f:
        f.write(_templates[two_level])


def _open_ports(h: SimHost, domid: int) -> list[int]:
    return h.domains[domid].open_ports()  # a byte search of the channel table; list_ports decodes every port


def is_2l(h: SimHost, d: int) -> bool:
    return h.domains[d].mem.event_abi != ABI_FIFO


def online(h: SimHost, d: int) -> list[int]:
    """The vCPUs of domain ``d`` that are up: the only ones a correct guest binds, moves or consumes on."""
    return [v for v, s in enumerate(h.domains[d].mem.vcpu_states()) if s == VCPU_ONLINE]


def l2_consume(h: SimHost, d: int, v: int, n: int) -> list[int]:
    """Linux's 2-level upcall on vCPU ``v``: up to ``n`` ports delivered (and acknowledged), counted delivered as
    the guest's consumer counts them."""
    return h.consume(d, v, n, timeout=0)


def step(h: SimHost, rng: random.Random, log: list[str]) -> None:
    """One operation by a correct guest (or Xen on its behalf); refusals Xen would give are fine."""
    d = rng.randrange(DOMAINS)
    ports = _open_ports(h, d)
    two = is_2l(h, d)
    op = rng.choices(["bind", "send", "burst", "consume", "mask", "unmask", "prio", "move", "requeue", "close",
                      "many", "hotplug", "device"], [14, 24, 6, 16, 6, 8, 0 if two else 6, 6, 0 if two else 3, 8, 1, 2,
                                                    3])[0]
    try:
        if op == "device":
            device_traffic(h, rng, d, log)
        elif op == "hotplug":
            if h.domains[d].bare:
                return
            if VCPUS - 1 in online(h, d):  # the dying CPU handles what is queued for it before it goes down
                while l2_consume(h, d, VCPUS - 1, 4096) if two else h.consume(d, VCPUS - 1, 4096, timeout=0):
                    pass
                h.cpu_down(d, d, VCPUS - 1)
                log.append(f"d{d} cpu {VCPUS - 1} down")
            else:
                h.cpu_up(d, d, VCPUS - 1)
                log.append(f"d{d} cpu {VCPUS - 1} up")
        elif op == "bind":
            kind = rng.choice(["inter", "inter", "unbound", "virq", "ipi"])
            if kind == "inter":
                r = rng.randrange(DOMAINS)
                rp = h.alloc_unbound(0, r, d)
                p = h.bind_interdomain(d, d, r, rp)
                log.append(f"d{d} interdomain {p} <-> d{r}:{rp}")
            elif kind == "unbound":
                log.append(f"d{d} unbound {h.alloc_unbound(0, d, rng.randrange(DOMAINS))}")
            elif kind == "virq":
                virq = rng.choice([1, 2, 3, 5, 7])
                log.append(f"d{d} virq {virq} -> {h.bind_virq(d, d, virq, rng.choice(online(h, d)))}")
            else:
                log.append(f"d{d} ipi {h.bind_ipi(d, d, rng.choice(online(h, d)))}")
        elif op == "many":  # dom0 adds an event-array page (1024 ports each); a domU fills its one page
            mem = h.domains[d].mem
            limit = (min(mem.nr_chans, abi.EVTCHN_2L_NR_CHANNELS) if two else mem.nr_chans) - 1
            if mem.max_pages > 1 and not two:
                n = mem.nr_ports - len(ports) + rng.randint(1, 100)
            else:
                n = rng.randint(300, 1100)
            n = min(n, int(FILL * limit) - len(ports))
            for _ in range(n):
                h.bind_ipi(d, d, rng.choice(online(h, d)))
            log.append(f"d{d} {max(n, 0)} ipis")
        elif not ports:
            return
        else:
            st = h.status(0, d, rng.choice(ports))
            if op == "send":
                if st.state in ("interdomain", "ipi"):
                    h.send(d, d, st.port, tell_unbound=False)
                    log.append(f"d{d} send {st.port}")
                elif st.state == "virq":
                    h.raise_virq(d, st.virq, st.vcpu)
                    log.append(f"xen raises virq {st.virq} on d{d}:{st.port}")
            elif op == "burst":  # events on several ports at once: long queues, left half consumed
                sent = []
                for port in rng.sample(ports, min(len(ports), rng.randint(2, 6))):
                    st = h.status(0, d, port)
                    if st.state in ("interdomain", "ipi"):
                        h.send(d, d, port, tell_unbound=False)
                        sent.append(port)
                log.append(f"d{d} burst {sent}")
            elif op == "requeue" and st.state in ("interdomain", "ipi"):
                # issue 10's sequence at the receiving end: its queue drained keeps a head that names the port,
                # which the second event then queues at another priority
                rd, rp = (d, st.port) if st.state == "ipi" else (st.remote_domain, st.remote_port)
                p1, p2 = rng.randrange(Q), rng.randrange(Q)
                h.set_priority(rd, rd, rp, p1)
                h.send(d, d, st.port, tell_unbound=False)
                got = h.consume(rd, h.status(0, rd, rp).vcpu, 4096, timeout=0)
                h.set_priority(rd, rd, rp, p2)
                h.send(d, d, st.port, tell_unbound=False)
                log.append(f"d{rd} requeue {rp}: priority {p1}, event, consumed {got}, priority {p2}, event")
            elif op == "consume":
                v = rng.choice(online(h, d))
                n = rng.randint(1, 3)
                got = l2_consume(h, d, v, n) if two else h.consume(d, v, n, timeout=0)
                log.append(f"d{d} vcpu {v} consumes {got}")
            elif op == "mask":
                h.mask(d, d, st.port)
                log.append(f"d{d} mask {st.port}")
            elif op == "unmask":
                h.unmask(d, d, st.port)
                log.append(f"d{d} unmask {st.port}")
            elif op == "prio":
                pr = rng.randrange(Q)
                h.set_priority(d, d, st.port, pr)
                log.append(f"d{d} set-priority {st.port} {pr}")
            elif op == "move" and two:
                # Linux's rebind_irq_to_cpu(): masked around the move, so unmasking raises it on the new vCPU
                v = rng.choice(online(h, d))
                was = h.domains[d].mem.l2_bit("mask", st.port)
                h.mask(d, d, st.port)
                try:
                    h.bind_vcpu(d, d, st.port, v)
                    log.append(f"d{d} mask, bind-vcpu {st.port} {v}, unmask")
                finally:
                    if not was:
                        h.unmask(d, d, st.port)
            elif op == "move":
                v = rng.choice(online(h, d))
                h.bind_vcpu(d, d, st.port, v)
                log.append(f"d{d} bind-vcpu {st.port} {v}")
            elif op == "close":
                h.close_port(d, d, st.port)
                log.append(f"d{d} close {st.port}")
    except ChannelError as e:
        if e.errno not in REFUSALS:
            raise
        log.append(f"refused: {e}")


def device_traffic(h: SimHost, rng: random.Random, d: int, log: list[str]) -> None:
    """A busy PV device of ``d`` (a vif, added the first time, served by another domain): its well-behaved
    frontend puts work on the ring before each notify while the backend's kernel runs its lateeoi handler now and
    then (lateeoi.py): a flood the driver keeps up with, its port masked for each EOI, spurious only where a
    history's plain notify came with no work."""
    if h.domains[d].bare:
        return
    nodes = h.xenstore_nodes()
    fronts = sorted(int(v) for k, v in nodes.items() if k.startswith(f"/local/domain/{d}/device/vif/")
                    and k.endswith(("-tx", "-rx")))
    fronts = [p for p in fronts if p in _open_ports(h, d) and h.status(0, d, p).state == "interdomain"]
    if not fronts:
        b = rng.choice([x for x in range(DOMAINS) if x != d and not h.domains[x].bare])
        made = h.device_add("vif", d, b)
        fronts = [p["port"] for p in made["ports"]]
        log.append(f"d{d} vif {made['id']} served by d{b}: ports {fronts}")
    port = rng.choice(fronts)
    b = h.status(0, d, port).remote_domain
    n = rng.randint(5, 200)
    for _ in range(n):
        h.push(d, d, port, 1)
        if rng.random() < 0.3:
            h.serve(b, rng.choice(online(h, b)))
    for v in online(h, b):
        h.serve(b, v)
    log.append(f"d{d} pushes {n} requests on {port}, d{b} serves them")


def settle(h: SimHost, keep: set[tuple[int, int]] = frozenset(), hold: set[tuple[int, int]] = frozenset()) -> None:
    """The guests move on: every masked port unmasked (but the (domain, port)s in ``keep``), every queue drained
    but those of the (domain, vCPU)s in ``hold``, a vCPU that stopped taking events (2-level: every vCPU's upcall
    run until it finds nothing)."""
    for d in range(DOMAINS):
        mem = h.domains[d].mem
        two = is_2l(h, d)
        for port in _open_ports(h, d):
            if two:
                masked = mem.l2_bit("mask", port)
            else:
                w = mem.word(port)
                masked = w is not None and w & abi.WORD_MASKED
            if masked and (d, port) not in keep:
                h.unmask(d, d, port)
        for v in online(h, d):
            while (d, v) not in hold and (l2_consume(h, d, v, 4096) if two else h.consume(d, v, 4096, timeout=0)):
                pass


def run_history(h: SimHost, seed: int, steps: int = STEPS) -> list[str]:
    rng = random.Random(seed)
    log: list[str] = []
    for _ in range(steps):
        step(h, rng, log)
    return log


def build(state_dir: str, seed: int, steps: int = STEPS, two_level: bool = False) -> list[str]:
    fresh_host(state_dir, two_level)
    with SimHost(state_dir) as h:
        return run_history(h, seed, steps)


def sample(state_dir: str) -> Evidence:
    """doctor's evidence, as `xenevt doctor` collects it on the simulator (the guests' local state known)."""
    b = select_backend("sim", state_dir=state_dir, read_only=True)
    try:
        return collect.from_backend(b)
    finally:
        b.shutdown() if hasattr(b, "shutdown") else None


def sample_frames(h: SimHost) -> Evidence:
    """The same memory read as frames from outside the guest (privcmd): no local READY or heads."""
    ev = Evidence("frames")
    for d in range(DOMAINS):
        statuses = h.list_ports(0, d)
        mem = DomainMemory(bytearray(h.domains[d].mem.snapshot()))
        limit = min(mem.nr_chans, abi.EVTCHN_2L_NR_CHANNELS) if is_2l(h, d) else mem.nr_chans
        collect.add_dump(ev, build_dump(mem, d, "frames", channels={st.port: st for st in statuses},
                                        guest_known=False, max_ports=limit))
        for st in statuses:
            collect.merge_port(ev.domain(d), collect.port_from_status(st))
    return ev


def again(ev: Evidence) -> Evidence:
    """A snapshot as --save writes and --since reads it (so every history also round-trips the format)."""
    return Evidence.from_json(ev.to_json())


# --- healthy histories: what doctor may say ---------------------------------------------------------------------
def allowed(f: doctor.Finding) -> bool:
    """On one sample of a healthy host: information, or a port the guest keeps masked with an event waiting."""
    return f.severity == "info" or (f.severity, f.rule) == ("warning", "pending-masked")


def check_healthy(state_dir: str, seed: int, two_level: bool = False) -> dict:
    """One history, sampled as doctor does (guest known) and as frames from outside; then settled and
    sampled again with --since: the first may hold only allowed findings, the second nothing at all."""
    out: dict = {"seed": seed, "counts": collections.Counter(), "bad": []}
    fresh_host(state_dir, two_level)
    tag = "-2l" if two_level else ""
    with SimHost(state_dir) as h:
        log = run_history(h, seed)
        first = {"sim" + tag: sample(state_dir), "frames" + tag: sample_frames(h)}
        settle(h)
        second = {"sim" + tag: sample(state_dir), "frames" + tag: sample_frames(h)}
    for view in first:
        before = again(first[view])
        second[view].taken_at = before.taken_at + 10
        for when, rep in (("first", doctor.examine(first[view])), ("settled", doctor.examine(second[view], before))):
            for f in rep.findings:
                ok = when == "first" and allowed(f)
                out["counts"][(view, when, f.severity, f.rule, "ok" if ok else "BAD")] += 1
                if not ok:
                    out["bad"].append((view, when, f.severity, f.rule, f.domain, f.ports, f.title))
            if rep.unread or rep.warnings:
                out["counts"][(view, when, "unread/warnings", "", "BAD")] += 1
                out["bad"].append((view, when, "unread/warnings", rep.unread[:3], rep.warnings[:3]))
    if out["bad"]:
        out["log"] = log
    return out


# --- breakage ---------------------------------------------------------------------------------------------------
@dataclass
class Expect:
    """The finding that must name an injected breakage."""

    rule: str
    domain: int
    port: int | None = None          # must be among the finding's ports (None: a queue, named by vcpu/priority)
    vcpu: int | None = None
    priority: int | None = None
    samples: int = 1                 # 2: a state that is stuck only when a second sample still shows it
    keep: set = field(default_factory=set)  # (domain, port)s the guest leaves masked while it moves on
    hold: set = field(default_factory=set)  # (domain, vCPU)s that stop taking events while the guests move on
    severity: str | None = None      # the finding's severity, where it is not the default's
    between: object = None           # instead of settling: what happens between the two samples (h -> None)
    window: float = 10.0             # seconds between the two samples
    title: str | None = None         # words the finding's title must hold

    def matches(self, f: doctor.Finding) -> bool:
        if (f.rule, f.domain) != (self.rule, self.domain):
            return False
        wanted = (self.severity,) if self.severity else ("error",) if self.samples == 2 else ("warning", "error")
        if f.severity not in wanted:
            return False
        if self.port is not None and self.port not in f.ports:
            return False
        if self.vcpu is not None and f.vcpu != self.vcpu:
            return False
        if self.title is not None and self.title not in f.title:
            return False
        return self.priority is None or f"priority {self.priority}:" in f.title


def live_chains(mem: DomainMemory) -> dict[tuple[int, int], list[int]]:
    """(vcpu, priority) -> the ports the guest will consume, from where it goes on (its local head, else the
    control block's), for every queue that is live (READY in the control block or taken by the guest)."""
    out = {}
    for v in range(mem.nr_vcpus):
        cb = mem.control_block(v)
        if cb is None:
            continue
        g = mem.guest(v)
        for p in range(Q):
            if not (cb[0] >> p & 1 or g[0] >> p & 1 or g[1 + p]):
                continue
            chain, port = [], g[1 + p] or cb[2 + p]
            while port and port not in chain and (mem.word(port) or 0) & abi.WORD_LINKED:
                chain.append(port)
                port = abi.word_link(mem.word(port))
            if chain:
                out[(v, p)] = chain
    return out


def _queue_idle(mem: DomainMemory, v: int, p: int) -> bool:
    """Nothing queued on (v, p) from Xen's side or the guest's: a new event there becomes a new head."""
    cb, g = mem.control_block(v), mem.guest(v)
    tail = mem.tails()[v * Q + p]
    return not (cb[0] >> p & 1 or g[0] >> p & 1 or g[1 + p]) and not (tail and (mem.word(tail) or 0)
                                                                         & abi.WORD_LINKED)


def make_queue(h: SimHost, rng: random.Random, n: int, d: int | None = None) -> tuple[int, int, int, list[int]]:
    """A new live queue of ``n`` events: fresh IPIs at an idle (vCPU, priority), each sent once."""
    doms = [d] if d is not None else rng.sample(range(DOMAINS), DOMAINS)
    for d in doms:
        mem = h.domains[d].mem
        idle = [(v, p) for v in range(VCPUS) for p in range(Q) if _queue_idle(mem, v, p)]
        if not idle:
            continue
        v, p = rng.choice(idle)
        ports = []
        for _ in range(n):
            port = h.bind_ipi(d, d, v)
            h.set_priority(d, d, port, p)
            h.send(d, d, port)
            ports.append(port)
        return d, v, p, ports
    raise RuntimeError("no idle queue in any domain")


def a_chain(h: SimHost, rng: random.Random, n: int, d: int | None = None,
            fresh_ready: bool = False) -> tuple[int, int, int, list[int]]:
    """A live queue of at least ``n`` events, from the history if it has one, else made."""
    found = []
    for dd in [d] if d is not None else range(DOMAINS):
        mem = h.domains[dd].mem
        for (v, p), chain in live_chains(mem).items():
            g = mem.guest(v)
            if len(chain) >= n and not (fresh_ready and (g[0] >> p & 1 or g[1 + p]
                                                         or not mem.control_block(v)[0] >> p & 1)):
                found.append((dd, v, p, chain))
    if found:
        return rng.choice(found)
    return make_queue(h, rng, n, d)


def _set_link(mem: DomainMemory, port: int, link: int) -> None:
    mem.set_word(port, (mem.word(port) & ~abi.EVTCHN_FIFO_LINK_MASK) | link)


def _idle_ports(h: SimHost, d: int) -> list[int]:
    """Open ports with an event word that are not queued."""
    mem = h.domains[d].mem
    return [p for p in _open_ports(h, d) if mem.word(p) is not None and not mem.word(p) & abi.WORD_LINKED]


def _stale_heads(mem: DomainMemory) -> set[int]:
    """Ports a control block names as the head of a queue that is not live (drained: the head stays)."""
    live = live_chains(mem)
    return {mem.control_block(v)[2 + p] for v in range(mem.nr_vcpus) if mem.control_block(v) is not None
            for p in range(Q) if (v, p) not in live}


def _an_idle_port(h: SimHost, rng: random.Random, avoid=lambda mem: set()) -> tuple[int, int]:
    doms = []
    for d in range(DOMAINS):
        avoided = avoid(h.domains[d].mem)
        doms.append((d, [p for p in _idle_ports(h, d) if p not in avoided]))
    doms = [(d, ports) for d, ports in doms if ports]
    while not doms:
        d = rng.randrange(DOMAINS)
        port = h.bind_ipi(d, d, rng.randrange(VCPUS))
        if port not in avoid(h.domains[d].mem):
            return d, port
    d, ports = rng.choice(doms)
    return d, rng.choice(ports)


def inj_lost_link_skipped(h, rng):
    """Xen's LINK write lost: the event before a pending port links past it, so no walk reaches it.

    Not the last port of a chain when a drained queue's stale head names it: alone, LINKED, linking
    nowhere, it then reads exactly as that queue's one event with its READY bit lost (doctor calls it
    head-without-ready, naming the same port); a skipped port further up links into the live chain."""
    for _ in range(3):
        picks = []
        for d in range(DOMAINS):
            mem = h.domains[d].mem
            stale = _stale_heads(mem)
            for chain in live_chains(mem).values():
                picks += [(d, chain, i) for i in range(1, len(chain)) if i < len(chain) - 1 or chain[i] not in stale]
        if picks:
            break
        make_queue(h, rng, 3)
    d, chain, i = rng.choice(picks)
    mem = h.domains[d].mem
    _set_link(mem, chain[i - 1], abi.word_link(mem.word(chain[i])))
    return Expect("linked-unreachable", d, chain[i])


def inj_lost_link_off_chain(h, rng):
    """A pending port marked LINKED on no chain (Xen set LINKED, the link to it never happened).

    Not a port a drained queue's stale head names: LINKED there, it would read exactly as that queue's
    head with its READY bit lost (Xen links into an empty queue as its head), which doctor rightly calls
    head-without-ready."""
    d, port = _an_idle_port(h, rng, avoid=_stale_heads)
    mem = h.domains[d].mem
    mem.set_word(port, abi.WORD_PENDING | abi.WORD_LINKED)
    return Expect("linked-unreachable", d, port)


def inj_cycle(h, rng):
    d, v, p, chain = a_chain(h, rng, 1)
    target = rng.choice(chain)
    _set_link(h.domains[d].mem, chain[-1], target)
    return Expect("chain-cycle", d, target)


def inj_stray_unlinked(h, rng):
    """A LINK to a port that is not LINKED (a word the guest or a bad write changed)."""
    d, v, p, chain = a_chain(h, rng, 1)
    mem = h.domains[d].mem
    unlinked = [q for q in range(1, mem.nr_ports) if not mem.word(q) & abi.WORD_LINKED]
    target = rng.choice(unlinked)
    _set_link(mem, rng.choice(chain), target)
    return Expect("chain-unlinked", d, target)


def inj_stray_range(h, rng):
    d, v, p, chain = a_chain(h, rng, 1)
    mem = h.domains[d].mem
    target = rng.randrange(mem.nr_ports, abi.EVTCHN_FIFO_NR_CHANNELS)
    _set_link(mem, rng.choice(chain), target)
    return Expect("chain-range", d, target)


def inj_shared(h, rng):
    """Two live queues' chains joined: a LINK into the middle of another queue."""
    d, v, p, chain = a_chain(h, rng, 1)
    others = [(k, c) for k, c in live_chains(h.domains[d].mem).items() if k != (v, p)]
    if not others:
        make_queue(h, rng, rng.randint(1, 3), d)
        others = [(k, c) for k, c in live_chains(h.domains[d].mem).items() if k != (v, p)]
    _, other = rng.choice(others)
    target = rng.choice(other)
    _set_link(h.domains[d].mem, chain[-1], target)
    return Expect("chain-shared", d, target)


def inj_busy(h, rng):
    d = rng.randrange(DOMAINS)
    ports = [p for p in _open_ports(h, d) if h.domains[d].mem.word(p) is not None]
    if not ports:
        ports = [h.bind_ipi(d, d, rng.randrange(VCPUS))]
    port = rng.choice(ports)
    mem = h.domains[d].mem
    mem.set_word(port, mem.word(port) | abi.WORD_BUSY)
    return Expect("busy-left-set", d, port)


def inj_ready_without_head(h, rng):
    spots = [(d, v, p) for d in range(DOMAINS) for v in range(VCPUS) for p in range(Q)
             if h.domains[d].mem.control_block(v)[2 + p] == 0 and _queue_idle(h.domains[d].mem, v, p)]
    d, v, p = rng.choice(spots)
    h.domains[d].mem.control_block(v)[0] |= 1 << p
    return Expect("ready-without-head", d, vcpu=v, priority=p)


def inj_ready_lost(h, rng):
    """A queue Xen made READY, not yet taken by the guest, loses its READY bit: nobody will look at it."""
    d, v, p, chain = a_chain(h, rng, 1, fresh_ready=True)
    h.domains[d].mem.control_block(v)[0] &= ~(1 << p)
    return Expect("head-without-ready", d, chain[0], vcpu=v)


def _maskable(h: SimHost, d: int) -> list[int]:
    """Open ports but IPIs: an IPI resting pending and masked is what Linux's PV-spinlock kicker does by design
    (doctor says so as info, masked-ipi), so masking one for good is no breakage a sample can show."""
    ports = [p for p in _open_ports(h, d) if h.domains[d].mem.chan(p).state != ECS_IPI]
    return ports or [_interdomain(h, None, d, d)[0]]


def inj_masked_forever(h, rng):
    """The guest masks a port, an event arrives, and the guest never unmasks it while it goes on."""
    d = rng.randrange(DOMAINS)
    port = rng.choice(_maskable(h, d))
    mem = h.domains[d].mem
    h.mask(d, d, port)
    mem.set_word(port, mem.word(port) | abi.WORD_PENDING)
    return Expect("pending-masked", d, port, samples=2, keep={(d, port)})


def inj_never_queued(h, rng):
    """PENDING set, unmasked, never linked: stuck once a second sample still shows it."""
    d, port = _an_idle_port(h, rng)
    h.domains[d].mem.set_word(port, abi.WORD_PENDING)
    return Expect("pending-not-queued", d, port, samples=2)


def inj_peer_gone(h, rng):
    """One end of an interdomain channel freed in its channel table only."""
    pairs = []
    for d in range(DOMAINS):
        for port in _open_ports(h, d):
            st = h.status(0, d, port)
            if st.state == "interdomain":
                pairs.append((d, port, st.remote_domain, st.remote_port))
    if not pairs:
        r, d = rng.randrange(DOMAINS), rng.randrange(DOMAINS)
        rp = h.alloc_unbound(0, r, d)
        pairs.append((d, h.bind_interdomain(d, d, r, rp), r, rp))
    d, port, r, rp = rng.choice(pairs)
    h.domains[r].mem.update_chan(rp, state=ECS_FREE)
    return Expect("remote-end-mismatch", d, port)


def inj_no_control_block(h, rng):
    """A vCPU that never registered its control block, and a port bound to it."""
    d, v = rng.randrange(DOMAINS), rng.randrange(VCPUS)
    mem = h.domains[d].mem
    mem._words[CB_STATE_OFFSET // 4 + v] = 0
    on_v = [p for p in _open_ports(h, d) if h.status(0, d, p).vcpu == v]
    port = rng.choice(on_v) if on_v else h.bind_ipi(d, d, v)
    return Expect("vcpu-without-control-block", d, port, vcpu=v)


def inj_ports_exhausted(h, rng):
    d = rng.randrange(1, DOMAINS)
    try:
        while True:
            h.bind_ipi(d, d, rng.randrange(VCPUS))
    except ChannelError as e:
        if e.errno != errno.ENOSPC:
            raise
    return Expect("ports-exhausted", d)


def _l2_fresh_pending(h, rng) -> tuple[int, int, int]:
    """A new IPI on a 2-level domain, raised: pending, unmasked, its selector bit and upcall flag set."""
    d, v = rng.randrange(DOMAINS), rng.randrange(VCPUS)
    port = h.bind_ipi(d, d, v)
    h.send(d, d, port)
    return d, v, port


def _set_sel_bit(mem: DomainMemory, v: int, word: int, on: bool) -> None:
    at = mem.geometry.vcpu_info_offset(v) + 8
    sel = int.from_bytes(mem.buffer[at: at + 8], "little")
    sel = sel | 1 << word if on else sel & ~(1 << word)
    mem.buffer[at: at + 8] = sel.to_bytes(8, "little")


def inj_l2_selector_lost(h, rng):
    """Xen's selector write lost: a pending, unmasked port whose word the upcall will never scan.  Ports of that
    vCPU masked with an event waiting in the same word stay masked: unmasking one would set the bit again."""
    d, v, port = _l2_fresh_pending(h, rng)
    mem = h.domains[d].mem
    _set_sel_bit(mem, v, port // 64, False)
    keep = {(d, p) for p in _open_ports(h, d) if p // 64 == port // 64 and mem.l2_bit("mask", p)
            and mem.l2_bit("pending", p) and mem.chan(p).notify_vcpu == v}
    return Expect("pending-not-queued", d, port, samples=2, keep=keep)


def inj_l2_upcall_lost(h, rng):
    """Xen's upcall flag write lost: the selector says where to look, but no upcall comes."""
    d, v, port = _l2_fresh_pending(h, rng)
    mem = h.domains[d].mem
    mem.buffer[mem.geometry.vcpu_info_offset(v)] = 0
    return Expect("pending-not-queued", d, port)


def inj_l2_masked_forever(h, rng):
    d = rng.randrange(DOMAINS)
    port = rng.choice(_maskable(h, d))
    mem = h.domains[d].mem
    h.mask(d, d, port)
    mem.l2_pending()[port // 64] |= 1 << port % 64
    return Expect("pending-masked", d, port, samples=2, keep={(d, port)})


def _interdomain(h, rng, d: int, r: int) -> tuple[int, int]:
    """A channel from domain ``d`` to ``r`` as a toolstack sets one up: ``r``'s end first, ``d`` binds to it."""
    rp = h.alloc_unbound(0, r, d)
    return h.bind_interdomain(d, d, r, rp), rp


def inj_peer_destroyed(h, rng, dying: bool = False):
    """A domU destroyed (xl destroy): Xen's evtchn_destroy() closes its ports, so dom0's end of a channel to it
    goes back to unbound, waiting for a domain that is gone (or dying)."""
    r = rng.randrange(1, DOMAINS)
    port, _ = _interdomain(h, rng, 0, r)
    h.destroy_domain(0, r, dying=dying)
    return Expect("dead-peer", 0, port)


def inj_waiting_for_nobody(h, rng):
    """alloc_unbound naming a domain that does not exist: Xen stores the remote domid unchecked."""
    d = rng.randrange(DOMAINS)
    return Expect("dead-peer", d, h.alloc_unbound(0, d, rng.randrange(DOMAINS, 200)))


def inj_storm(h, rng):
    """A peer notifying in a loop: 300 events in the 10 ms between two samples (30,000/s) on one port."""
    d, r = rng.randrange(DOMAINS), rng.randrange(DOMAINS)
    port, rp = _interdomain(h, rng, d, r)

    def flood(h):
        for _ in range(300):
            h.send(d, d, port)

    return Expect("event-storm", r, rp, samples=2, severity="warning", between=flood, window=0.01)


def inj_vcpu_stopped(h, rng):
    """A vCPU that stops taking events (blocked with events off): an event queued on it stays pending."""
    d = rng.randrange(DOMAINS)
    v = rng.choice(online(h, d))
    port = h.bind_ipi(d, d, v)
    h.send(d, d, port)
    return Expect("pending-stuck", d, port, samples=2, severity="warning", hold={(d, v)})


def inj_queued_on_down_vcpu(h, rng):
    """VCPUOP_down behind the kernel's back (no port moved, no queue drained), then an event for that vCPU."""
    d, v = rng.randrange(DOMAINS), VCPUS - 1
    if v not in online(h, d):
        h.cpu_up(d, d, v)
    port = h.bind_ipi(d, d, v)
    h.vcpu_op(d, d, v, up=False)
    h.send(d, d, port)
    return Expect("queued-on-down-vcpu", d, port, vcpu=v, severity="warning")


def inj_never_up(h, rng):
    """A port bound to a vCPU that was never brought up (past the online count): no control block."""
    d, v = rng.randrange(DOMAINS), VCPUS - 1
    if v in online(h, d):
        h.cpu_down(d, d, v)
    mem = h.domains[d].mem
    mem._words[CB_STATE_OFFSET // 4 + v] = 0  # (as a host booted with it offline has it)
    mem.set_vcpu_state(v, VCPU_NEVER_UP)
    port = h.alloc_unbound(d, d, 0)
    h.bind_vcpu(d, d, port, v)
    return Expect("vcpu-without-control-block", d, port, vcpu=v, title="never brought up")


def inj_reused_busy_port(h, rng):
    """Xen's get_free_port() before 78e24c269b (the replay's switch): a port closed while LINKED on vCPU 1's queue
    handed out to an IPI for vCPU 0, whose event then stays on vCPU 1's queue."""
    d = rng.choice([d for d in range(DOMAINS) if not is_2l(h, d)])  # (a FIFO host: a domain reset stays FIFO)
    for v in (0, 1):
        if v not in online(h, d):
            h.cpu_up(d, d, v)
    mine = h.alloc_unbound(d, d, 0)
    peer = h.bind_interdomain(0, 0, d, mine)
    h.bind_vcpu(d, d, mine, 1)
    h.send(0, 0, peer)
    h.close_port(d, d, mine)
    with faults.switched_on(faults.REUSE_BUSY_PORT):
        port = 0
        while port != mine:  # (the lowest free port first: the history's own freed ones below it)
            port = h.bind_ipi(d, d, 0)
    h.send(d, d, port)
    return Expect("queued-on-wrong-vcpu", d, port, vcpu=1)



def inj_offline_undrained(h, rng):
    """Linux before fcdf31a7c162 (the replay's switch): a CPU taken down with an event of its own still queued,
    its ports closed and its queues not drained, so the closed port stays LINKED on the down vCPU's queue."""
    d, v = rng.choice([d for d in range(DOMAINS) if not is_2l(h, d) and not h.domains[d].bare]), VCPUS - 1
    if v not in online(h, d):
        h.cpu_up(d, d, v)
    port = h.bind_ipi(d, d, v)
    h.send(d, d, port)
    with faults.switched_on(faults.CPU_DEAD_NO_DRAIN):
        h.cpu_down(d, d, v)
    return Expect("queued-on-down-vcpu", d, port, vcpu=v, severity="warning")

KINDS_2L = {
    "2-level: selector bit lost (2 samples)": inj_l2_selector_lost,
    "2-level: upcall flag lost": inj_l2_upcall_lost,
    "2-level: masked forever (2 samples)": inj_l2_masked_forever,
    "2-level: ports exhausted": inj_ports_exhausted,
}

KINDS = {
    "lost link (LINK skips it)": inj_lost_link_skipped,
    "lost link (LINKED, on no chain)": inj_lost_link_off_chain,
    "cycle": inj_cycle,
    "stray LINK to an unlinked port": inj_stray_unlinked,
    "stray LINK past the array": inj_stray_range,
    "LINK into another queue": inj_shared,
    "BUSY left set": inj_busy,
    "READY with head 0": inj_ready_without_head,
    "READY bit lost (guest known)": inj_ready_lost,
    "masked forever (2 samples)": inj_masked_forever,
    "pending, never queued (2 samples)": inj_never_queued,
    "peer gone": inj_peer_gone,
    "vCPU without control block": inj_no_control_block,
    "ports exhausted": inj_ports_exhausted,
    "peer destroyed (gone)": inj_peer_destroyed,
    "peer destroyed (dying)": lambda h, rng: inj_peer_destroyed(h, rng, dying=True),
    "unbound for a domain that does not exist": inj_waiting_for_nobody,
    "event storm (2 samples)": inj_storm,
    "vCPU stopped taking events (2 samples)": inj_vcpu_stopped,
    "events queued on a down vCPU": inj_queued_on_down_vcpu,
    "a port on a vCPU never brought up": inj_never_up,
    "a busy port reused for an IPI (Xen before 78e24c269b)": inj_reused_busy_port,
    "a CPU down, its closed ports left LINKED (Linux before fcdf31a7c162)": inj_offline_undrained,
}
ALL_KINDS = KINDS | KINDS_2L


def check_injected(state_dir: str, kind: str, seed: int) -> dict:
    """A healthy history, then one breakage of ``kind``: is it named (rule, domain, port)?"""
    fresh_host(state_dir, kind in KINDS_2L)
    rng = random.Random(f"{kind}/{seed}")
    with SimHost(state_dir) as h:
        log = run_history(h, seed)
        expect = ALL_KINDS[kind](h, rng)
        ev = sample(state_dir)
        if expect.samples == 2:
            if expect.between is not None:
                expect.between(h)
            else:
                settle(h, expect.keep, expect.hold)
            later = sample(state_dir)
            before = again(ev)
            later.taken_at = before.taken_at + expect.window
            rep = doctor.examine(later, before)
        else:
            rep = doctor.examine(ev)
    found = any(expect.matches(f) for f in rep.findings)
    out = {"kind": kind, "seed": seed, "found": found}
    if not found:
        out.update(expect=expect, log=log, findings=[(f.severity, f.rule, f.domain, f.ports, f.title)
                                                      for f in rep.findings])
    return out


# --- the measurement --------------------------------------------------------------------------------------------
def _job(args: tuple) -> list[dict]:
    what, items = args
    with tempfile.TemporaryDirectory(prefix="xenevt-histories-") as d:
        if what in ("healthy", "healthy-2l"):
            return [check_healthy(d, seed, what == "healthy-2l") for seed in items]
        return [check_injected(d, kind, seed) for kind, seed in items]


@dataclass
class Figures:
    healthy: int = 0
    healthy_2l: int = 0
    counts: collections.Counter = field(default_factory=collections.Counter)
    bad: list = field(default_factory=list)        # (seed, finding) of healthy histories doctor flagged
    recall: dict = field(default_factory=dict)     # kind -> [found, total]
    missed: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> int:
        return sum(n for k, n in self.counts.items() if k[2] == "error")

    @property
    def unexplained_warnings(self) -> int:
        return sum(n for k, n in self.counts.items() if k[2] == "warning" and k[4] == "BAD")

    @property
    def unexplained(self) -> int:
        return sum(n for k, n in self.counts.items() if k[4] == "BAD")


def measure(healthy: int, per_kind: int, workers: int = 2, first_seed: int = 0, chunk: int = 50,
            healthy_2l: int | None = None) -> Figures:
    """``healthy`` FIFO histories, ``healthy_2l`` 2-level ones (default: as many), ``per_kind`` of each breakage."""
    healthy_2l = healthy if healthy_2l is None else healthy_2l
    jobs = [(what, list(range(first_seed + i, first_seed + min(i + chunk, n))))
            for what, n in (("healthy", healthy), ("healthy-2l", healthy_2l)) for i in range(0, n, chunk)]
    cases = [(kind, first_seed + i) for i in range(per_kind) for kind in ALL_KINDS]
    jobs += [("inject", cases[i:i + chunk]) for i in range(0, len(cases), chunk)]
    fig = Figures(recall={k: [0, 0] for k in ALL_KINDS})
    start = time.monotonic()
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_job, jobs))
    else:
        results = [_job(j) for j in jobs]
    for (what, _), batch in zip(jobs, results, strict=True):
        for r in batch:
            if what in ("healthy", "healthy-2l"):
                if what == "healthy":
                    fig.healthy += 1
                else:
                    fig.healthy_2l += 1
                fig.counts.update(r["counts"])
                fig.bad += [(r["seed"], b) for b in r["bad"]]
            else:
                fig.recall[r["kind"]][1] += 1
                fig.recall[r["kind"]][0] += r["found"]
                if not r["found"]:
                    fig.missed.append(r)
    fig.seconds = time.monotonic() - start
    return fig


def report(fig: Figures) -> str:
    lines = [f"doctor precision: {fig.healthy} healthy FIFO and {fig.healthy_2l} healthy 2-level (-2l) histories "
             f"({STEPS} steps each), each sampled as doctor does on the simulator (sim) and as frames from outside "
             "the guest (frames), then settled and sampled again with --since"]
    lines.append(f"  errors: {fig.errors}   unexplained warnings: {fig.unexplained_warnings}   "
                 f"anything else not allowed: {fig.unexplained - fig.errors - fig.unexplained_warnings}")
    by = collections.Counter()
    for (view, when, sev, rule, verdict), n in fig.counts.items():
        by[(view, when, sev, rule, verdict)] += n
    for (view, when, sev, rule, verdict), n in sorted(by.items()):
        note = "allowed" if verdict == "ok" else "NOT ALLOWED"
        lines.append(f"    {view:9s} {when:7s} {sev:8s} {rule:24s} {n:7d}  {note}")
    for seed, b in fig.bad[:10]:
        lines.append(f"    seed {seed}: {b}")
    lines.append("doctor recall: each breakage injected into a healthy history")
    width = max(map(len, fig.recall))
    lines.append(f"  {'kind':{width}s}  found/total")
    worst = 1.0
    for kind, (found, total) in fig.recall.items():
        rate = found / total if total else 0.0
        worst = min(worst, rate)
        lines.append(f"  {kind:{width}s}  {found:5d}/{total:<5d} {100 * rate:6.2f}%")
    for m in fig.missed[:10]:
        lines.append(f"    missed {m['kind']} seed {m['seed']}: expected {m['expect']}, got {m['findings']}")
    lines.append(f"{fig.healthy + fig.healthy_2l} histories and {sum(t for _, t in fig.recall.values())} injections in "
                 f"{fig.seconds:.0f} s; errors on healthy: {fig.errors}, unexplained warnings: "
                 f"{fig.unexplained_warnings}; lowest recall {100 * worst:.2f}%")
    return "\n".join(lines)


def passed(fig: Figures) -> bool:
    return fig.unexplained == 0 and all(t and f / t >= 0.99 for f, t in fig.recall.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.histories", description=__doc__.splitlines()[0])
    ap.add_argument("--healthy", type=int, default=10_000, help="healthy histories (default 10,000)")
    ap.add_argument("--healthy-2l", type=int, default=None, help="healthy 2-level histories (default: --healthy)")
    ap.add_argument("--per-kind", type=int, default=200, help="injections of each breakage kind (default 200)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    args = ap.parse_args(argv)
    fig = measure(args.healthy, args.per_kind, args.workers, args.seed, healthy_2l=args.healthy_2l)
    print(report(fig))
    replayed, text = replays()
    print(text)
    return 0 if passed(fig) and replayed else 1


def replays() -> tuple[bool, str]:
    """doctor's recall over the catalogue of historical bugs (xenevt/replay): each replay's finding made and the
    bug named, and the same workload on the fixed code healthy."""
    from xenevt.replay import catalogue, run

    lines = ["doctor recall: historical bugs replayed (xenevt sim replay)"]
    named = found = clean = 0
    rows = catalogue()
    width = max(len(r.name) for r in rows)
    for r in rows:
        got, fixed = run(r.name), run(r.name, fixed=True)
        named += got.named
        found += got.ok
        clean += fixed.ok
        what = "named" if got.named else "found (no signature can tell it)" if got.ok else "found" if got.found \
            else "MISSED"
        lines.append(f"  {r.name:{width}s}  {what:6s}  "
                     f"fixed code: {('as it must be' if r.fixed_findings else 'healthy') if fixed.ok else 'NOT OK'}")
    lines.append(f"{len(rows)} replays: {found}/{len(rows)} found by doctor ({100 * found / len(rows):.2f}%), "
                 f"{named}/{len(rows)} also named as the old bug, "
                 f"{clean}/{len(rows)} healthy with the fix (or showing only what the fix rightly leaves)")
    return found == clean == len(rows), "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
