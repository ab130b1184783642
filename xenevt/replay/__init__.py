"""Replays of historical event-channel bugs on the simulator (``xenevt sim replay``).

A replay brings one catalogued bug (xenevt/evidence/bugs.py) back: a fresh simulated host, the bug's fault switch
on (xenevt/engine/faults.py: its order of operations, in the C engine and the Python reference alike, or in the
simulator's Python-side Xen or Linux), and the workload that exposed it, its interleaving forced at the fault's
hook point.  Then doctor looks, as it would on any host, and the replay says whether doctor named the symptom it
expects (rule, domain, port) and the bug.  The same workload with the switch off (``fixed=True``) is the code as
fixed: doctor must find nothing there.

A replay module declares its scripts with ``@replay``; a script gets a :class:`Stage` and returns the
:class:`Expect`-ed finding.  Switches are process-wide: one replay at a time.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..engine import faults

# each declares its replays on import, in this order (the --list order)
MODULES = ("xen_fifo", "xen_sim", "minios", "linux", "linux_close", "linux_l2")


@dataclass(frozen=True)
class Expect:
    """The finding doctor must make: ``rule`` on ``domain`` naming ``port`` (and ``vcpu`` where given); with
    ``samples=2`` doctor looks twice, ``between`` run between the two looks (a flood, time passing)."""

    rule: str
    domain: int
    port: int | None = None
    vcpu: int | None = None
    samples: int = 1
    between: Callable[[], None] | None = None
    storm_rate: float | None = None  # doctor's --storm-rate for this replay (None: its default)

    def matches(self, f: Any) -> bool:
        return (f.rule == self.rule and f.domain == self.domain
                and (self.port is None or self.port in f.ports) and (self.vcpu is None or f.vcpu == self.vcpu))

    def as_dict(self) -> dict:
        return {k: v for k, v in (("rule", self.rule), ("domain", self.domain), ("port", self.port),
                                  ("vcpu", self.vcpu)) if v is not None}


class Stage:
    """What a replay script works with: a fresh simulated host (``host``, the simulator's SimHost: Xen's and the
    guest kernels' own calls), a log of what happened (``say``), and the bug's switch (``fault``)."""

    def __init__(self, host: Any, state_dir: str, fixed: bool):
        self.host, self.state_dir, self.fixed = host, state_dir, fixed
        self.steps: list[str] = []

    def backend_channel(self, guest: int) -> tuple[int, int]:
        """A channel as a backend in dom0 makes one with ``guest``: the guest offers a port on vCPU 0
        (EVTCHNOP_alloc_unbound), dom0 binds its end; (the guest's port, dom0's)."""
        mine = self.host.alloc_unbound(guest, guest, 0)
        return mine, self.host.bind_interdomain(0, 0, guest, mine)

    def say(self, text: str) -> None:
        """One line of what happened, in order (``sim replay`` prints them)."""
        self.steps.append(text)

    @contextmanager
    def fault(self, mask: int, hook: faults.Hook | None = None) -> Iterator[None]:
        """The bug's switch on for the block, ``hook`` run at its racy point; with ``fixed``, the same block on
        the code as fixed (the switch off, the hook never called)."""
        if self.fixed:
            yield
            return
        with faults.switched_on(mask, hook):
            yield


Script = Callable[[Stage], Expect]


@dataclass(frozen=True)
class Replay:
    name: str
    bug: str            # its id in xenevt/evidence/bugs.py
    summary: str        # the workload, in one line
    script: Script
    abi: str = "fifo"   # the guests' ABI ("fifo" or "2l")
    domains: int = 2
    vcpus: int = 2
    online: int | None = None  # the guests' vCPUs up at boot (the others never up: no control block); all
    bare: tuple[int, ...] = ()  # domains without a guest kernel (create_host's): the script makes their calls
    # the differential scenarios (tests/scenarios) in which real Xen 4.17 and 4.20, booted in xen-ci, showed the
    # fixed order of operations this replay's switch undoes, record for record as the simulator does
    real_xen: tuple[str, ...] = ()
    host: dict[str, Any] = field(default_factory=dict)  # more of create_host's settings (limits, kernels' ABIs)
    # what the same workload rightly leaves on the code as fixed (a rogue peer the fix throttles, a guest the fix
    # holds at its limit): these rules' findings are allowed there, none saying it looks like this bug; empty:
    # the fixed code must be healthy
    fixed_findings: tuple[str, ...] = ()
    # False where the bug leaves nothing that tells it from another cause of the same finding: doctor must make
    # the finding (rule, domain, port) and name no other bug, but cannot say which old bug it looks like
    nameable: bool = True

    def as_dict(self) -> dict:
        from ..evidence.history import BUGS

        return {"name": self.name, "summary": self.summary, "abi": self.abi, **BUGS[self.bug].as_dict(),
                "real_xen": list(self.real_xen), "fixed_findings": list(self.fixed_findings),
                "nameable": self.nameable}


REPLAYS: dict[str, Replay] = {}


def replay(name: str, bug: str, summary: str, **kw: Any) -> Callable[[Script], Script]:
    """Declare the decorated script as the replay ``name`` of the catalogued ``bug``."""

    def register(fn: Script) -> Script:
        if name in REPLAYS:
            raise ValueError(f"replay {name!r} declared twice")
        REPLAYS[name] = Replay(name, bug, summary, fn, **kw)
        return fn

    return register


def catalogue() -> list[Replay]:
    """Every replay, in the modules' order."""
    from ..evidence import bugs  # noqa: F401  (the bugs they name)

    for m in MODULES:
        importlib.import_module(f"{__name__}.{m}")
    return list(REPLAYS.values())


@dataclass
class Result:
    replay: Replay
    fixed: bool
    steps: list[str]
    expect: Expect
    diagnosis: Any                    # the front door's Diagnosis (doctor's report and names)
    state_dir: str | None = None      # where the host was kept (``keep``)
    found: list[Any] = field(default_factory=list)  # the findings that match the expectation

    @property
    def named(self) -> bool:
        """The expected finding was made and says it looks like this replay's bug."""
        return any(f.resembles == self.replay.bug for f in self.found)

    @property
    def ok(self) -> bool:
        """The replay showed what it must: the finding and the bug named (a bug that leaves nothing to tell it by,
        ``Replay.nameable`` False: the finding, naming no other); with ``fixed``, no finding but those the fixed
        code rightly makes for this workload (``Replay.fixed_findings``), and none naming this bug."""
        rep = self.diagnosis.report
        if self.fixed:
            allowed = self.replay.fixed_findings
            if not allowed:
                return not rep.findings and rep.verdict == "healthy"
            return all(f.rule in allowed and f.resembles != self.replay.bug for f in rep.findings)
        if not self.replay.nameable:
            return bool(self.found) and not any(f.resembles for f in self.found)
        return self.named


def run(name: str, *, fixed: bool = False, keep: str | None = None) -> Result:
    """Run the replay ``name`` on a fresh simulated host (in ``keep``, an empty or new directory, to look at it
    afterwards; else a temporary one); ``fixed``: its fault switch off."""
    from .._front.host import open as open_host
    from ..errors import XenevtError
    from ..sim.host import SimHost, create_host

    by_name = {r.name: r for r in catalogue()}
    if name not in by_name:
        raise XenevtError(f"sim replay: no replay named {name!r} (xenevt sim replay --list)")
    r = by_name[name]
    if keep is not None and os.path.exists(keep) and os.listdir(keep):
        raise XenevtError(f"sim replay: --keep {keep}: the directory is not empty")
    where = keep if keep is not None else tempfile.mkdtemp(prefix="xenevt-replay-")
    try:
        settings: dict[str, Any] = {"nr_domains": r.domains, "nr_vcpus": r.vcpus, "online": r.online,
                                    "bare": r.bare, "percpu": True, "abi": r.abi, "force": True} | r.host
        create_host(where, **settings)
        with SimHost(where) as h:
            stage = Stage(h, where, fixed)
            expect = r.script(stage)
        with open_host("sim", where) as host:
            diag = host.doctor(storm_rate=expect.storm_rate)
            if expect.samples == 2:
                if expect.between is not None:
                    expect.between()
                host.refresh()
                diag = host.doctor(since=diag, storm_rate=expect.storm_rate)
        found = [f for f in diag.report.findings if expect.matches(f)]
        return Result(r, fixed, stage.steps, expect, diag, keep, found)
    finally:
        if keep is None:
            shutil.rmtree(where, ignore_errors=True)
