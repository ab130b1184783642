"""What dump and doctor do with a source: open its reader (memory.open_sources picks it), decode, gather
evidence, name the ports, examine.  The host is asked for its backend only by sources that read through it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .source import Source

if TYPE_CHECKING:
    from ..dump.model import DomainDump, TwoLevelDump
    from ..evidence.doctor import Finding, Report
    from ..evidence.model import Evidence
    from ..evidence.names import Names
    from ..memory import EventImage, MemorySource
    from .host import Host


class Diagnosis:
    """Doctor's result: the verdict ("healthy", "problems", "inconclusive"), the findings (each with severity,
    rule, domain, ports, title, evidence and advice), what went unread, and where the evidence came from.

    Example::

        d = host.doctor()
        assert d.healthy, [f.title for f in d.findings]
    """

    __slots__ = ("report", "evidence", "names")

    def __init__(self, report: Report, evidence: Evidence, names: Names | None = None):
        self.report = report      # the rules' Report (findings, checked domains, unread items, warnings)
        self.evidence = evidence  # the facts the rules read (save with .evidence.to_json())
        self.names = names        # the ports' names (xenstore, VIRQs, IPIs) where the host's own view was read

    @property
    def verdict(self) -> str:
        """"healthy", "problems" (a warning or worse) or "inconclusive" (something unread, or a finding that one
        sample cannot tell from a transient state)."""
        return self.report.verdict

    @property
    def healthy(self) -> bool:
        return self.report.verdict == "healthy"

    @property
    def findings(self) -> list[Finding]:
        return self.report.findings

    @property
    def unread(self) -> list[str]:
        return self.report.unread

    @property
    def exit_code(self) -> int:
        """0 healthy, 3 problems, 4 inconclusive: what ``xenevt doctor`` exits with."""
        return self.report.exit_code

    @property
    def source(self) -> str:
        """Where the evidence came from, in words ("sim backend + 'e' dump", "raw dump f.raw" …)."""
        return self.evidence.source

    def as_dict(self) -> dict[str, Any]:
        """What ``xenevt doctor --json`` prints."""
        out = self.report.as_dict() | {"source": self.evidence.source}
        names = self.names
        if names is not None:
            for f, d in zip(self.report.findings, out["findings"], strict=True):
                d["names"] = [names.field(f.domain, p) for p in f.ports]
        return out

    def __repr__(self) -> str:
        return f"<xenevt.Diagnosis {self.verdict}: {len(self.findings)} finding(s) from {self.source}>"


# --- memory -------------------------------------------------------------------------------------------
def open_memory(host: Host, source: Source) -> list[MemorySource]:
    """The readers of ``source``, one per domain; the host's backend is opened only for a source that needs it."""
    from .. import memory

    backend = host._backend(read_only=True) if source.needs_backend else None
    return memory.open_sources(source.memory_ask(), backend)


def _one_image(host: Host, source: Source) -> EventImage:
    chosen = open_memory(host, source)
    if len(chosen) != 1:
        raise UsageError(f"a raw dump holds one domain: {source!r} names {len(chosen)}")
    return chosen[0].image()


def dump(host: Host, source: Source, all_words: bool = False) -> list[DomainDump | TwoLevelDump]:
    from ..dump.decode import build_dump

    dumps = []
    for src in open_memory(host, source):
        img = src.image()
        dumps.append(build_dump(img.mem, img.domain, img.source, channels=src.channels(), guest_known=img.guest_known,
                                all_words=all_words, max_ports=img.max_ports, vcpu_known=img.vcpu_known,
                                vcpu_states=img.vcpu_states))
    if source.kind not in ("raw", "dump-core"):  # a saved file or a core outlives the xenstore that named its ports
        _name_dumps(host, dumps)
    return dumps


def _name_dumps(host: Host, dumps: list) -> None:
    """Names for the ports the dumps show (what list names them: evidence/names.py), from the backend's xenstore
    and interrupts; a port whose channel the source cannot tell is named by xenstore alone."""
    from ..errors import XenevtError
    from ..evidence.model import PortFacts
    from ..evidence.names import for_backend

    shown = [(d.domain, row.channel if row.channel is not None else PortFacts(row.port, "unknown"))
             for d in dumps for row in getattr(d, "words", None) or getattr(d, "ports", None) or ()]
    if not shown:
        return
    try:
        backend = host._backend(read_only=True)
    except XenevtError:  # a source read without the backend (this kernel's memory): its ports go unnamed
        return
    names = for_backend(backend, shown)
    for d in dumps:
        d.names = names


def save_raw(host: Host, source: Source, path: str) -> dict[str, Any]:
    from ..dump.rawfile import save_raw as save

    img = _one_image(host, source)
    mem = img.mem
    size = save(path, mem, img.domain, img.saved_source or img.source, guest=img.guest_known,
                channels=img.channel_table, vcpu_known=img.vcpu_known)
    out: dict[str, Any] = {"domain": img.domain, "file": path, "bytes": size, "abi": img.abi}
    if img.abi != "2-level":
        out["event_array_pages"] = mem.nr_pages
    out["vcpus"] = mem.nr_vcpus
    return out


def encode_raw(host: Host, source: Source) -> bytes:
    from ..dump.rawfile import encode

    img = _one_image(host, source)
    return encode(img.mem, img.domain, img.saved_source or img.source, guest=img.guest_known,
                  channels=img.channel_table, vcpu_known=img.vcpu_known)


# --- evidence and doctor ----------------------------------------------------------------------------
def evidence(host: Host, source: Source, domains: tuple[int, ...] = ()) -> Evidence:
    """One sample of evidence from ``source``: one branch per kind of source, here and nowhere else."""
    from ..evidence import collect

    kind = source.kind
    if kind == "live":
        return collect.from_backend(host._backend(read_only=True), list(domains) or None)
    if kind == "edump":
        from ..errors import read_input
        from ..evidence import edump as reader
        from ..evidence.model import EvidenceError

        path = str(source.path)
        text = read_input(path, "'e' dump", EvidenceError)
        ev = reader.parse(text, f"'e' dump {'<stdin>' if path == '-' else path}")
        collect.edump_cut(text, ev)
        return ev
    if kind == "lsevtchn":
        from ..evidence import lsevtchn

        ev = lsevtchn.read(str(source.path), source.domain)
        _domain_list(host, ev, source.domain)
        return ev
    (src,) = open_memory(host, source)
    label = {"raw": f"raw dump {source.path}", "dump-core": f"xl dump-core {source.path}",
             "guest-kernel": f"domain {source.domain}'s kernel"}.get(kind, src.kind)
    return collect.from_memory(src, label)


def _domain_list(host: Host, ev: Evidence, domain: int) -> None:
    """lsevtchn prints no domain list, so its text alone cannot tell a peer that is gone (the backend's view and
    a whole 'e' dump can): the list of the host here is taken where it lists the domain the text is about (the
    text is then this host's), else a warning says the peers went unchecked."""
    from ..errors import XenevtError

    dom = ev.domains.get(domain)
    peers = sorted({p.remote_domain for p in (dom.ports.values() if dom is not None else ())
                    if p.state in ("unbound", "interdomain") and p.remote_domain not in (None, domain)})
    if not peers:
        return
    b = host.existing_backend()
    try:
        known = b.info().get("domains") if b is not None else None
    except XenevtError:
        known = None
    listed = sorted(d["domain"] for d in known) if isinstance(known, list) else []
    if domain in listed and b is not None:
        ev.listed = listed
        ev.source += f" + the {b.name} backend's domain list"
        return
    ev.warnings.append(f"lsevtchn prints no domain list and no host here lists domain {domain}: whether the "
                       f"peer domain(s) {', '.join(map(str, peers))} still exist was not checked")


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic collector paused while a host's facts are built: a 200-domain host's evidence is some 200,000
    small objects, none in a cycle, and each thousand made would otherwise start a collection, the later ones
    walking the whole growing heap (a third of doctor's time).  What was made meanwhile then goes straight to the
    oldest generation (frozen and unfrozen: where nobody else froze anything), as the young collections would
    move the facts after walking them twice (some 0.1 s of an exporter's round); garbage cycles made meanwhile
    are collected by the next full collection."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def doctor(host: Host, source: Source, domains: tuple[int, ...] = (), interval: float | None = None,
           since: str | Diagnosis | None = None, storm_rate: float | None = None, stuck_after: float | None = None,
           save: str | None = None) -> Diagnosis:
    from ..evidence.model import Evidence

    if interval is not None and (since or source.kind != "live"):
        raise UsageError("--interval samples the backend twice: not with --since, --edump, --lsevtchn or --from")
    prior = since.evidence if isinstance(since, Diagnosis) else Evidence.load(since) if since else None
    if interval is not None:
        with _no_cyclic_gc():
            prior = evidence(host, source, domains)
        time.sleep(interval)
        host._fresh()  # the second sample sees the host as it is now, not the copy the first one read
    with _no_cyclic_gc():
        return _examine(host, source, domains, prior, storm_rate, stuck_after, save)


def _examine(host: Host, source: Source, domains: tuple[int, ...], prior: Evidence | None, storm_rate: float | None,
             stuck_after: float | None, save: str | None) -> Diagnosis:
    """The sample now, named and examined by the rules (against ``prior``, an earlier one, where given)."""
    from ..evidence import doctor as rules

    ev = evidence(host, source, domains)
    if domains:
        ev.domains = {d: f for d, f in ev.domains.items() if d in domains}
        for d in sorted(set(domains) - set(ev.domains)):
            ev.skip("--domain", f"domain {d} is not in the evidence", d)
            ev.domain(d)  # so the note is kept, and the domain counted with 0 ports
    if save:
        _save(save, ev.to_json())
    names = _name_evidence(host, ev, prior) if source.kind == "live" else None
    kw: dict[str, float] = {}
    if storm_rate is not None:
        kw["storm_rate"] = storm_rate
    if stuck_after is not None:
        kw["stuck_after"] = stuck_after
    return Diagnosis(rules.examine(ev, prior, **kw), ev, names)


def _name_evidence(host: Host, ev: Evidence, prior: Evidence | None) -> Names:
    """The names of the evidence's ports (xenstore, VIRQs, IPIs), and each IRQ row netback named for a vif queue
    tied to that port's counter (in both samples), before the rules read them."""
    from ..evidence.names import ROW_KEYS, for_backend

    # the kernel's IRQ rows are in the evidence already (its counters): not read a second time
    irq_rows = {d: [r for r in dom.counters if r.key.startswith(ROW_KEYS)] for d, dom in ev.domains.items()}
    names = for_backend(host._backend(read_only=True), [(d, pf) for d, dom in sorted(ev.domains.items())
                                                       for _, pf in sorted(dom.ports.items())], irq_rows=irq_rows)
    for sample in (ev, prior):
        for d, dom in (sample.domains.items() if sample is not None else ()):
            for counter in dom.counters:
                if counter.port is None:
                    counter.port = names.irq_port(d, counter.key)
    return names


def _save(path: str, text: str) -> None:
    """The evidence saved whole or not at all (written aside, then renamed into place)."""
    import os

    from ..evidence.model import EvidenceError

    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise EvidenceError(f"cannot save snapshot {path}: {(e.strerror or str(e)).lower()}") from None
