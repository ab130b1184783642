"""``xenevt.open`` and ``Host``: one host (real Xen or the simulator), its backend chosen once and opened on
first use.

A host opens its backend in one of two ways: read-only for what only looks (``domains``, ``ports``, ``status``,
``dump``, ``doctor``: a simulated host is then mapped as a private copy, and another user's host may be read),
read-write once anything acts (``bind_*``, ``notify``, ``mask`` …); from then on the read-write one answers
the looks too, so a script sees its own changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..activity import Sample
    from ..backend.base import Backend
    from ..dump.model import DomainDump, TwoLevelDump
    from ..evidence.names import Names
    from ..evidence.rules.registry import Rule
    from ..ports import NotifyResult, PortStatus
    from .events import Events
    from .reading import Diagnosis
    from .source import Source

BACKENDS = ("auto", "sim", "xen")


def open(backend: str | None = None, state: str | None = None, caller: int | None = None, *, create: bool = False,
         on_create: Callable[[str], None] | None = None) -> Host:
    """A host to drive and inspect: ``backend`` "xen" (this machine's hypervisor, through /dev/xen), "sim" (the
    embedded simulated host whose state is in ``state``, default $XENEVT_STATE or the per-user folder) or
    "auto" (Xen where /dev/xen/evtchn exists, else the simulator); None: $XENEVT_BACKEND, else "auto".
    ``caller``: on the simulator, the domain making the calls (default: each domain acts on its own ports; dom0
    is privileged).  ``create``: on the
    simulator, make a fresh host (2 domains, 2 vCPUs each) where there is none yet (``on_create(state)`` is
    told).  Nothing is opened until the first call; use it as a context manager, or call ``shutdown()``.

    Example::

        import xenevt
        with xenevt.open("sim", state="/tmp/h", create=True) as host:
            print(host.domains())          # [0, 1]
    """
    if backend is None:
        import os

        backend = os.environ.get("XENEVT_BACKEND") or "auto"
    if backend not in BACKENDS:
        from ..errors import UsageError

        raise UsageError(f"unknown backend {backend!r} (expected auto, sim or xen)")
    return Host(backend, state, caller, create=create, on_create=on_create)


class Host:
    """One host, real or simulated: its domains and their event channels.  Made by ``xenevt.open``.

    Every call names the domain it acts on; ports are Xen's numbers.  Errors are xenevt's exceptions
    (``ChannelError`` with the hypercall's errno, ``StateError``, ``UsageError`` …), each naming what it is
    about.  ``close(domain, port)`` closes a port; ``shutdown()`` (or leaving the ``with`` block) lets the host go.
    """

    def __init__(self, backend: str = "auto", state: str | None = None, caller: int | None = None, *,
                 create: bool = False, on_create: Callable[[str], None] | None = None):
        self._name = backend
        self._state = state
        self._caller = caller
        self._create = create
        self._on_create = on_create
        self._backends: dict[bool, Backend] = {}

    # --- life ---------------------------------------------------------------------------------------
    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        opened = ", ".join(("read-only" if ro else "read-write") for ro in self._backends) or "not opened yet"
        return f"<xenevt.Host {self._name} state={self._state!r} ({opened})>"

    def shutdown(self) -> None:
        """Let the host go: on Xen the ports this process bound are closed (they live with the process); a
        simulated host's mapping is released (its ports stay bound until closed).  Opened again if used again."""
        backends = list(self._backends.values())
        self._backends.clear()
        for b in backends:
            b.shutdown()

    def _backend(self, read_only: bool = False) -> Backend:
        """The backend below (xenevt.backend's protocol, internal), opened on first use.  A read-write backend
        already open answers a read-only request."""
        if read_only and False in self._backends:
            return self._backends[False]
        b = self._backends.get(read_only)
        if b is None:
            from ..backend import select_backend

            created = None
            if self._create:
                created = self._on_create or _quiet
            b = select_backend(self._name, state_dir=self._state, caller=self._caller, read_only=read_only,
                               created=created)
            self._backends[read_only] = b
        return b

    def existing_backend(self) -> Backend | None:
        """The backend where there is one already (real Xen, or a simulated host that exists): none is created
        for the asking, and None where none can be opened."""
        if self._backends:
            return self._backends.get(False) or self._backends[True]
        from ..backend import select_backend
        from ..errors import XenevtError

        try:
            b = select_backend(self._name, state_dir=self._state, caller=self._caller, read_only=True)
        except XenevtError:
            return None
        self._backends[True] = b
        return b

    def _fresh(self) -> Backend:
        """A read view as it is now: a read-only simulated host is the copy mapped when it was opened, so it is
        opened again (a read-write one is live)."""
        self.refresh()
        return self._backend(read_only=True)

    def refresh(self) -> None:
        """Look again: a host that has only looked (no call acted) reads a simulated host as one consistent copy,
        taken on the first look; the next look after ``refresh()`` takes a new one.  Xen's views, and a host that
        has acted, are always live.  ``host.refresh(); host.ports(0)``"""
        if False not in self._backends and True in self._backends:
            self._backends.pop(True).shutdown()

    @property
    def state(self) -> str | None:
        """The simulator's state directory as given to ``open`` (None: the default place)."""
        return self._state

    @property
    def kind(self) -> str:
        """Which backend runs: "sim" or "xen" (opens the host).  ``host.kind``"""
        return self._backend(read_only=True).name

    @property
    def ports_live_with_process(self) -> bool:
        """True on Xen: the ports this process binds (through /dev/xen/evtchn) are closed when it exits; a
        simulated host keeps them until closed.  A command that binds and exits says so."""
        return self._backend(read_only=True).ports_live_with_process

    def info(self) -> dict[str, Any]:
        """What the backend sees: its name, the ABI, each domain's vCPUs, ports and limits (as ``xenevt info
        --json`` prints it).  ``host.info()["abi"]``"""
        return self._backend(read_only=True).info()

    # --- looking ------------------------------------------------------------------------------------
    def domains(self) -> list[int]:
        """The domains' ids, ascending.  ``host.domains()  # [0, 1]``"""
        return self._backend(read_only=True).domains()

    def domain_names(self) -> dict[int, str]:
        """Each domain's name, as ``xl list`` shows it: xenstore's /local/domain/N/name (the simulator writes
        one for each of its domains), dom0 ``Domain-0`` where xenstore names it not; a domain without a name is
        left out.  ``host.domain_names()  # {0: "Domain-0", 1: "guest1"}``"""
        from ..errors import XenevtError

        b = self._backend(read_only=True)
        try:
            nodes, _ = b.xenstore()
        except XenevtError:  # (no xenstore here: dom0 keeps its name)
            nodes = {}
        out = {}
        for d in b.domains():
            name = nodes.get(f"/local/domain/{d}/name") or ("Domain-0" if d == 0 else None)
            if name:
                out[d] = name
        return out

    def domain_by_name(self, name: str) -> int:
        """The id of the domain called ``name`` (``domain_names``); UsageError naming the host's names if none
        is, or if two are.  ``host.domain_by_name("Domain-0")  # 0``"""
        from ..errors import UsageError

        names = self.domain_names()
        found = [d for d, n in names.items() if n == name]
        if len(found) == 1:
            return found[0]
        known = ", ".join(f"{n} ({d})" for d, n in sorted(names.items())) or "none"
        if found:
            raise UsageError(f"{len(found)} domains are named {name!r} ({', '.join(map(str, found))}): give its id")
        raise UsageError(f"no domain is named {name!r} (this host's: {known})")

    def ports(self, domain: int = 0) -> list[PortStatus]:
        """Every open port of ``domain``, ascending, each a PortStatus (state, vCPU, priority, remote end,
        FIFO flags where readable): what ``xenevt list`` prints.  ``[p.port for p in host.ports(0)]``"""
        return self._backend(read_only=True).list_ports(domain)

    def vcpu_states(self, domain: int = 0) -> list[str] | None:
        """Each vCPU of ``domain`` "online", "down" (VCPUOP_down: its control block and queues kept) or "never
        up", where the backend knows (the simulator); None where it does not.  ``host.vcpu_states(1)``"""
        return self._backend(read_only=True).vcpu_states(domain)

    def status(self, domain: int, port: int) -> PortStatus:
        """What Xen knows of ``port`` (EVTCHNOP_status) and its event word: what ``xenevt status`` prints.
        ``host.status(0, 5).state  # "interdomain"``"""
        return self._backend(read_only=True).status(domain, port)

    def names(self, domain: int = 0, ports: Iterable[PortStatus] | None = None) -> Names:
        """What each open port of ``domain`` (or each of ``ports``, PortStatus of any domains) is for (a vif's queue, a
        console, xenstore, a VIRQ or IPI…), from the host's xenstore and, on a real guest, its kernel's
        /proc/interrupts rows (each name's ``irq``).  A guest that may not ask EVTCHNOP_status of its own ports
        is named from its frontends' xenstore nodes.
        What could not be read is in ``notes``, never an error.  ``host.names(0).label(0, 5)``"""
        from ..errors import XenevtError
        from ..evidence.names import for_backend

        b = self._backend(read_only=True)
        if ports is not None:  # (each named in its own domain: a list of several domains' ports)
            return for_backend(b, [(st.domain, st) for st in ports])
        try:
            return for_backend(b, [(domain, st) for st in b.list_ports(domain)])
        except XenevtError:  # EPERM on a domU listing itself: its frontends' ports are in its xenstore
            return for_backend(b, [], frontends_of=domain)

    def activity(self, domain: int = 0) -> Sample:
        """One sample of ``domain``'s event counters: per port on the simulator (deliveries, raises, flags), per
        Xen interrupt and xenbus device on a real guest; two samples give rates (xenevt.activity.rates).
        ``before = host.activity(0)``"""
        from ..activity import Sample

        b = self._backend(read_only=True)
        return Sample(f"{b.name} domain {domain}", b.activity(domain))

    # --- acting -------------------------------------------------------------------------------------
    def bind_unbound(self, domain: int, remote_domain: int) -> int:
        """Allocate a port of ``domain`` that ``remote_domain`` may bind to (EVTCHNOP_alloc_unbound); returns it.
        ``p = host.bind_unbound(1, 0)``"""
        return self._backend().bind_unbound(domain, remote_domain)

    def bind_interdomain(self, domain: int, remote_domain: int, remote_port: int) -> int:
        """Connect a new port of ``domain`` to ``remote_port`` of ``remote_domain``, which must be unbound for
        it (EVTCHNOP_bind_interdomain); Xen sets the new port pending.  ``q = host.bind_interdomain(0, 1, p)``"""
        return self._backend().bind_interdomain(domain, remote_domain, remote_port)

    def bind_virq(self, domain: int, virq: int, vcpu: int = 0) -> int:
        """Bind virtual IRQ ``virq`` (a number: xenevt.abi.VIRQS names them) on ``vcpu``.
        ``host.bind_virq(0, 0)  # VIRQ_TIMER``"""
        return self._backend().bind_virq(domain, virq, vcpu)

    def bind_ipi(self, domain: int, vcpu: int = 0) -> int:
        """Bind an inter-processor interrupt port delivered to ``vcpu``.  ``host.bind_ipi(0, vcpu=1)``"""
        return self._backend().bind_ipi(domain, vcpu)

    def notify(self, domain: int, port: int) -> NotifyResult:
        """Send an event on ``port`` (EVTCHNOP_send): raised on the remote end (interdomain) or on ``domain``
        itself (IPI).  Returns where it went and what happened there.  ``host.notify(1, p).outcome``"""
        return self._backend().notify(domain, port)

    def notify_remote(self, domain: int, remote_domain: int, remote_port: int) -> NotifyResult:
        """Bind to ``remote_port`` (unbound for ``domain``), send once, close: what a one-shot tool on Xen does.
        ``host.notify_remote(0, 0, p)``"""
        return self._backend().notify_remote(domain, remote_domain, remote_port)

    def mask(self, domain: int, port: int) -> None:
        """Set MASKED on ``port``: its events stay pending, nothing is queued or delivered.  ``host.mask(0, q)``"""
        self._backend().mask(domain, port)

    def unmask(self, domain: int, port: int) -> None:
        """Clear MASKED on ``port``; if it is pending Xen links it and raises the upcall.  ``host.unmask(0, q)``"""
        self._backend().unmask(domain, port)

    def close(self, domain: int, port: int) -> None:
        """Close ``port`` (EVTCHNOP_close); an interdomain peer becomes unbound again.  ``host.close(0, q)``"""
        self._backend().close(domain, port)

    def set_priority(self, domain: int, port: int, priority: int) -> None:
        """Set ``port``'s FIFO priority (0 highest, 7 default, 15 lowest); a 2-level domain answers ENOSYS.
        ``host.set_priority(0, q, 0)``"""
        self._backend().set_priority(domain, port, priority)

    def bind_vcpu(self, domain: int, port: int, vcpu: int) -> None:
        """Deliver ``port``'s future events to ``vcpu`` (EVTCHNOP_bind_vcpu).  ``host.bind_vcpu(0, q, 1)``"""
        self._backend().bind_vcpu(domain, port, vcpu)

    def events(self, domain: int = 0, vcpu: int = 0, *, count: int | None = None, timeout: float | None = None,
               ping: Callable[[], object] | None = None, every: float | None = None) -> Events:
        """Consume ``domain``'s events on ``vcpu`` as its kernel's upcall handler does, one backend call per batch:
        an iterator of ports (a context manager too).  It ends after ``count`` events, or at ``timeout`` seconds
        once a batch comes back short; ``ping()`` is called every ``every`` seconds meanwhile.

        Example::

            with host.events(0, timeout=5.0) as ev:
                for port in ev:
                    print("event on", port)
        """
        from .events import Events

        return Events(self._backend(), domain, vcpu, count, timeout, ping, every)

    # --- reading memory and evidence ----------------------------------------------------------------
    def dump(self, source: Source | None = None, *, all_words: bool = False) -> list[DomainDump | TwoLevelDump]:
        """The event-channel memory ``source`` names (default: the host's view of dom0), decoded: one dump
        per domain (FIFO: queues, READY bits and every word not at rest; 2-level: bitmaps and vcpu_infos).
        ``all_words`` lists every port, those at rest (0, plain MASKED) too.  A file or this kernel never opens
        the host.

        Example::

            (d,) = host.dump(xenevt.Source.live(1))
            print(d.abi, [q.chain for v in d.vcpus for q in v.queues])
        """
        from .reading import dump
        from .source import Source

        return dump(self, source or Source.live(), all_words=all_words)

    def save_raw(self, path: str, source: Source | None = None) -> dict[str, Any]:
        """Save one domain's event-channel pages (as ``source`` names them) to ``path`` in xenevt's raw dump
        format, for a later ``Source.raw(path)``; returns what was saved (domain, file, bytes, abi, pages).
        ``host.save_raw("dom1.raw", xenevt.Source.live(1))``"""
        from .reading import save_raw
        from .source import Source

        return save_raw(self, source or Source.live(), path)

    def encode_raw(self, source: Source | None = None) -> bytes:
        """One domain's raw dump as bytes (what ``save_raw`` writes).  ``data = host.encode_raw()``"""
        from .reading import encode_raw
        from .source import Source

        return encode_raw(self, source or Source.live())

    def doctor(self, source: Source | None = None, *, domains: Iterable[int] = (), interval: float | None = None,
               since: str | Diagnosis | None = None, storm_rate: float | None = None, stuck_after: float | None = None,
               save: str | None = None) -> Diagnosis:
        """Examine event channels for stuck ports (doctor's rules) from ``source`` (default: the host's own view
        of every domain, or of ``domains``).  Two samples give rates, storms and ports stuck across them: take
        the second ``interval`` seconds after the first, or compare with an earlier sample ``since``: a snapshot
        saved with ``save``, or an earlier Diagnosis (a monitor's previous round).  Returns the Diagnosis: the
        verdict, the findings, what went unread.

        Example::

            d = host.doctor()
            if d.verdict != "healthy":
                for f in d.findings:
                    print(f.severity, f.domain, f.ports, f.title)
        """
        from .reading import doctor
        from .source import Source

        return doctor(self, source or Source.live(), domains=tuple(domains), interval=interval, since=since,
                      storm_rate=storm_rate, stuck_after=stuck_after, save=save)


def read_dump(source: Source, *, all_words: bool = False, backend: str | None = None,
         state: str | None = None) -> list[DomainDump | TwoLevelDump]:
    """``Host.dump`` of a host opened for this one call (a file or this kernel opens none).  (Not ``xenevt.dump``:
    that name is the dump model's package.)  ``(d,) = xenevt.read_dump(xenevt.Source.raw("dom1.raw"))``"""
    with open(backend, state) as host:
        return host.dump(source, all_words=all_words)


def doctor(source: Source | None = None, *, domains: Iterable[int] = (), interval: float | None = None,
           since: str | Diagnosis | None = None, backend: str | None = None, state: str | None = None) -> Diagnosis:
    """``Host.doctor`` of a host opened for this one call (a file opens none).
    ``xenevt.doctor(xenevt.Source.edump("e.txt")).verdict``"""
    with open(backend, state) as host:
        return host.doctor(source, domains=domains, interval=interval, since=since)


def doctor_rules() -> list[Rule]:
    """Every finding doctor can report, in the order it runs them: each Rule's ``id`` (a Finding's ``rule``),
    family, severities, what it needs beyond one sample, and what it means.
    ``[r.id for r in xenevt.doctor_rules()]``"""
    from ..evidence.rules import rules

    return rules()


def default_state_dir() -> str:
    """Where the simulator keeps its host when neither ``state`` nor $XENEVT_STATE names a folder (the CLI's
    sim commands name it)."""
    from ..backend import default_state_dir as where

    return where()


def _quiet(state: str) -> None:
    """A host made where none was, told to nobody (the caller asked for it with ``create``)."""
