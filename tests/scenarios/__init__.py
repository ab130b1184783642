"""Differential scenarios: event-channel hypercalls by dom0, written once, run on the simulator and on real Xen.

A scenario is a name (stable: one per behaviour) and a few lines, one step each::

    a = alloc_unbound 0 0          -> ok   a: unbound v0 dom0
    close a                        -> ok   a: closed v0
    send a                         -> EINVAL

Left of ``->`` the hypercall and its arguments: ports are names bound by an earlier step (``a = …``), numbers,
or ``far`` (a port past any domain's valid range); domains are numbers (``nodom`` is one that does not exist).
Right of it what the step must show: ``ok`` or an errno name, then optionally ``name: status`` for ports the
step changes.  A status is EVTCHNOP_status in words (``unbound v0 dom0``, ``interdomain v1 dom0:b``,
``virq v0 virq4``, ``closed v0``), with ``+PML`` appended (PENDING, MASKED, LINKED of the event word) where the
expectation is about the word too.  After every step each target records the result and the status of every
port named so far (with the word's flags where it can read them); records of two targets are compared step by
step, and a difference names the scenario, the step and both outcomes.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field

from xenevt.errors import ChannelError

FAR_PORT = 100_000          # past the valid range of any domain (FIFO: 2^17 ports, dom0 far fewer in use)
NO_DOMAIN = 1234            # a domain id no target has

OPS = {  # op: argument kinds (p: port, d: domain, n: number)
    "alloc_unbound": "dd", "bind_interdomain": "dp", "bind_virq": "nn", "send": "p", "close": "p",
    "status": "p", "status_of": "dp", "unmask": "p", "set_priority": "pn", "bind_vcpu": "pn", "reset": "d",
}
BINDS = {"alloc_unbound", "bind_interdomain", "bind_virq"}


@dataclass
class Step:
    text: str               # the line as written, for messages
    op: str
    args: list[str]
    bind: str | None = None  # the name the new port gets
    expect_result: str | None = None
    expect_ports: dict[str, str] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str
    steps: list[Step]
    xfail_xen: str | None = None   # a known difference from real Xen, with why
    sim_only: str | None = None    # why real Xen cannot run it from dom0
    sim_differs: str | None = None  # a known simulator difference, not fixed yet

    @property
    def names(self) -> list[str]:
        return [s.bind for s in self.steps if s.bind]


_LINE = re.compile(r"^(?:(\w+)\s*=\s*)?(\w+)((?:\s+[\w:]+)*)\s*(?:->\s*(.*))?$")
_EXPECT_PORT = re.compile(r"(\w+):\s*(.*?)\s*(?=\s\w+:\s|$)")


def parse(name: str, text: str, ops: dict[str, str] | None = None, binds: set[str] | None = None,
          **kw) -> Scenario:
    """A scenario from its text; ``ops``/``binds``: the operations it may use (default dom0's, OPS/BINDS)."""
    ops, binds = ops or OPS, binds or BINDS
    steps = []
    for raw in text.strip().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _LINE.match(line)
        if not m or m.group(2) not in ops:
            raise ValueError(f"scenario {name}: cannot read step {line!r}")
        bind, op, args, expect = m.group(1), m.group(2), m.group(3).split(), (m.group(4) or "").strip()
        optional = {"bind_virq": 1, "init_control": 1, "expand_array": 1}.get(op, 0)
        if len(args) > len(ops[op]) or len(args) < len(ops[op]) - optional:
            raise ValueError(f"scenario {name}: {op} takes {len(ops[op])} arguments: {line!r}")
        if bind and op not in binds:
            raise ValueError(f"scenario {name}: {op} gives no port to name: {line!r}")
        step = Step(line.split("->")[0].strip(), op, args, bind)
        if expect:
            result, _, rest = expect.partition(" ")
            if op.startswith("status") and result == "ok":
                result, rest = expect, ""  # the status itself is the result
            step.expect_result = result
            step.expect_ports = {k: v.strip() for k, v in _EXPECT_PORT.findall(rest.strip())}
        steps.append(step)
    return Scenario(name, steps, **kw)


def errname(n: int | None) -> str:
    """The errno's name as Xen's headers spell it (EOPNOTSUPP, not its Linux alias ENOTSUP)."""
    if n == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(n or 0, str(n))


# --- running ---------------------------------------------------------------------------------------------------
@dataclass
class StepRecord:
    step: str
    result: str
    ports: dict[str, str]
    extra: list[str] = field(default_factory=list)  # the guest's own view: ABI, control blocks, chains, selectors


@dataclass
class Record:
    target: str
    scenario: str
    steps: list[StepRecord]


def status_text(st, names_by_port: dict[int, str]) -> str:
    """EVTCHNOP_status in the scenario's words, ports named as the scenario names them."""
    out = f"{st.state} v{st.vcpu}"
    if st.state == "unbound":
        out += f" dom{st.remote_domain}"
    elif st.state == "interdomain":
        out += f" dom{st.remote_domain}:{names_by_port.get(st.remote_port, st.remote_port)}"
    elif st.state == "virq":
        out += f" virq{st.virq}"
    if st.flags:
        out += " +" + ("".join(c for c, k in (("P", "pending"), ("M", "masked"), ("L", "linked")) if st.flags[k])
                       or "-")
    return out


def run(scenario: Scenario, target) -> Record:
    """Each step on ``target`` (a Target: see targets.py); ports it bound are closed again at the end."""
    ports: dict[str, int] = {}
    out = []

    def port(arg: str) -> int:
        if arg == "far":
            return FAR_PORT
        if arg.isdigit():
            return int(arg)
        if arg not in ports:
            raise LookupError(f"(no port {arg})")
        return ports[arg]

    def dom(arg: str) -> int:
        return NO_DOMAIN if arg == "nodom" else int(arg)

    try:
        for step in scenario.steps:
            try:
                rv = _call(target, step.op, [port(x) if k == "p" else dom(x) if k == "d" else int(x)
                                              for k, x in zip(OPS[step.op], step.args, strict=False)])
                result = "ok"
                if step.op == "status_of" or step.op == "status":
                    result = "ok " + status_text(rv, {v: k for k, v in ports.items()}).split(" +")[0]
                if step.bind:
                    ports[step.bind] = rv
            except ChannelError as e:
                result = errname(e.errno)
            except LookupError as e:  # an earlier step that should have bound it failed
                result = str(e)
            by_port = {v: k for k, v in ports.items()}
            target.observe()
            seen = {}
            for name, p in ports.items():
                try:
                    seen[name] = status_text(target.status(0, p, flags=True), by_port)
                except ChannelError as e:
                    seen[name] = errname(e.errno)
            out.append(StepRecord(step.text, result, seen))
    finally:  # close what the last step saw open (never a port the scenario had closed: it may be reused)
        last = out[-1].ports if out else {}
        target.cleanup([p for k, p in ports.items() if last.get(k, "closed").split(" ")[0] not in
                        ("closed",) and not last.get(k, "").isupper()])
    return Record(target.name, scenario.name, out)


def _call(target, op: str, a: list[int]):
    """One hypercall on ``target``, its arguments resolved (ports, domains, numbers)."""
    if op == "alloc_unbound":
        return target.alloc_unbound(a[0], a[1])
    if op == "bind_interdomain":
        return target.bind_interdomain(a[0], a[1])
    if op == "bind_virq":
        return target.bind_virq(a[0], a[1] if len(a) > 1 else 0)
    if op == "status":
        return target.status(0, a[0])
    if op == "status_of":
        return target.status(a[0], a[1])
    if op in ("set_priority", "bind_vcpu"):
        return getattr(target, op)(a[0], a[1])
    return getattr(target, op)(*a)  # send, close, unmask (a port); reset (a domain)


# --- comparing -------------------------------------------------------------------------------------------------
def _without_flags(text: str) -> str:
    return text.split(" +")[0]


def _same(a: str, b: str) -> bool:
    """Equal, ignoring the word's flags where one side could not read them."""
    if a == b:
        return True
    return (" +" not in a or " +" not in b) and _without_flags(a) == _without_flags(b)


def _outcome(rec: StepRecord) -> str:
    return "  ".join([rec.result] + [f"{k}: {v}" for k, v in rec.ports.items()] + (["|"] + rec.extra if rec.extra
                                                                                  else []))


def differences(a: Record, b: Record) -> list[str]:
    """One message per differing step: the scenario, the step, and both outcomes side by side."""
    out = []
    for i, (x, y) in enumerate(zip(a.steps, b.steps, strict=False), 1):
        keys = list(dict.fromkeys(list(x.ports) + list(y.ports)))
        if x.result == y.result and x.extra == y.extra and \
                all(_same(x.ports.get(k, "-"), y.ports.get(k, "-")) for k in keys):
            continue
        w = max(len(a.target), len(b.target))
        out.append(f"scenario {a.scenario}, step {i}: {x.step}\n"
                   f"    {a.target:<{w}}  {_outcome(x)}\n"
                   f"    {b.target:<{w}}  {_outcome(y)}")
    if len(a.steps) != len(b.steps):
        out.append(f"scenario {a.scenario}: {a.target} ran {len(a.steps)} steps, {b.target} {len(b.steps)}")
    return out


def check_expectations(scenario: Scenario, rec: Record) -> list[str]:
    """Where the scenario says what a step shows, does the record show it?  Messages as differences() words them."""
    out = []
    for i, (step, got) in enumerate(zip(scenario.steps, rec.steps, strict=False), 1):
        if step.expect_result is None:
            continue
        want_result = step.expect_result
        ok = (got.result if " " in want_result else got.result.split(" ")[0]) == want_result
        for name, want in step.expect_ports.items():
            have = got.ports.get(name, "-")
            ok = ok and (have == want if " +" in want else _without_flags(have) == want)
        if not ok:
            want = "  ".join([want_result] + [f"{k}: {v}" for k, v in step.expect_ports.items()])
            w = max(len(rec.target), len("expected"))
            out.append(f"scenario {scenario.name}, step {i}: {step.text}\n"
                       f"    {'expected':<{w}}  {want}\n"
                       f"    {rec.target:<{w}}  {_outcome(got)}")
    return out
