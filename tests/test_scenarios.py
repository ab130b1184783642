"""The differential scenarios (tests/scenarios): on the simulator against what each scenario says Xen does,
and in the nested runner on real Xen against the simulator run in the same process (``xen-real``).

XENEVT_SIM_BREAK=<rule> makes one simulator rule deliberately wrong (xenevt/sim/hypercalls.py): the suite must
then fail naming the scenario and showing both outcomes.
"""

from __future__ import annotations

import errno
import os

import pytest

from tests.scenarios import check_expectations, differences, run
from tests.scenarios.catalog import BY_NAME, GUEST_SCENARIOS, SCENARIOS
from tests.scenarios.guest import SimGuest, compile_program, records
from tests.scenarios.targets import SimTarget, XenTarget
from xenevt.errors import ChannelError

HAVE_XEN = os.path.exists("/dev/xen/evtchn")
REQUIRE_XEN = os.environ.get("XENEVT_REQUIRE_XEN") == "1"


@pytest.fixture
def sim():
    t = SimTarget()
    yield t
    t.close_target()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_on_sim(scenario, sim, request):
    if scenario.sim_differs:
        request.applymarker(pytest.mark.xfail(reason=scenario.sim_differs, strict=True))
    problems = check_expectations(scenario, run(scenario, sim))
    assert not problems, "the simulator is not what Xen does:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def xen_target():
    if not HAVE_XEN:
        if REQUIRE_XEN:
            pytest.fail("XENEVT_REQUIRE_XEN=1 but /dev/xen/evtchn does not exist")
        pytest.skip("not running on Xen")
    t = XenTarget()
    yield t
    t.close_target()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"xen-real-{s.name}" for s in SCENARIOS])
def test_scenario_sim_vs_xen(scenario, xen_target, request):
    if scenario.sim_only:
        pytest.skip(scenario.sim_only)
    if scenario.xfail_xen or scenario.sim_differs:
        request.applymarker(pytest.mark.xfail(reason=scenario.xfail_xen or scenario.sim_differs, strict=True))
    sim = SimTarget(nr_vcpus=xen_target.nr_vcpus)
    try:
        mine = run(scenario, sim)
    finally:
        sim.close_target()
    real = run(scenario, xen_target)
    problems = differences(real, mine)
    print(f"XENCI-SCENARIO {'identical' if not problems else 'different'} {scenario.name}")
    assert not problems, "the simulator differs from real Xen:\n" + "\n".join(problems)
    problems = check_expectations(scenario, real)
    assert not problems, "real Xen differs from the scenario's expectation:\n" + "\n".join(problems)


def test_a_broken_simulator_rule_fails_naming_scenario_and_both_outcomes(monkeypatch, sim):
    monkeypatch.setenv("XENEVT_SIM_BREAK", "close-peer")
    scenario = BY_NAME["close-interdomain-peer-back-to-unbound"]
    problems = check_expectations(scenario, run(scenario, sim))
    assert len(problems) == 1
    text = problems[0]
    assert text.startswith("scenario close-interdomain-peer-back-to-unbound, step 3: close b\n")
    assert "expected  ok  a: unbound v0 dom0  b: closed v0" in text
    assert "sim       ok  a: interdomain v0 dom0:b" in text


def test_differences_print_both_records_side_by_side(sim):
    scenario = BY_NAME["send-raises-peer"]
    a = run(scenario, sim)
    b = run(scenario, sim)
    assert differences(a, b) == []
    b.target = "xen"
    b.steps[2].result = "EINVAL"
    (msg,) = differences(a, b)
    ports = "  ".join(f"{k}: {v}" for k, v in a.steps[2].ports.items())
    assert msg.splitlines() == ["scenario send-raises-peer, step 3: send b", f"    sim  ok  {ports}",
                                f"    xen  EINVAL  {ports}"]


# --- the guest's own event channels: the PV test guest (tests/guest) on real Xen, a bare domain on the simulator


def sim_guest_records(xen: str = "4.20") -> dict:
    g = SimGuest(xen=xen)
    try:
        return records(g.run(compile_program(GUEST_SCENARIOS)), GUEST_SCENARIOS, "sim")
    finally:
        g.close()


@pytest.fixture(scope="module")
def sim_guest():
    return sim_guest_records()


@pytest.mark.parametrize("scenario", GUEST_SCENARIOS, ids=[s.name for s in GUEST_SCENARIOS])
def test_guest_scenario_on_sim(scenario, sim_guest, request):
    if scenario.sim_differs:
        request.applymarker(pytest.mark.xfail(reason=scenario.sim_differs, strict=True))
    rec = sim_guest[scenario.name]
    assert len(rec.steps) == len(scenario.steps)
    problems = check_expectations(scenario, rec)
    assert not problems, "the simulator is not what Xen does:\n" + "\n".join(problems)


def test_guest_program_is_what_the_guest_reads():
    """Every step compiles to one program line the guest's parser takes (op, slot or '-', argument count)."""
    prog = compile_program(GUEST_SCENARIOS).splitlines()
    assert prog[-1] == "end" and sum(line.startswith("scenario ") for line in prog) == len(GUEST_SCENARIOS)
    steps = [line.split() for line in prog if line and not line.startswith(("scenario ", "end"))]
    assert len(steps) == sum(len(s.steps) for s in GUEST_SCENARIOS)
    nargs = {"alloc_unbound": 2, "bind_interdomain": 2, "bind_virq": 2, "bind_ipi": 1, "send": 1, "close": 1,
             "unmask": 1, "bind_vcpu": 2, "set_priority": 2, "reset": 1, "status": 2, "init_control": 3,
             "expand_array": 1, "mask": 1}
    for f in steps:
        assert f[0] == "-" or 0 <= int(f[0]) < 32
        assert len(f) - 2 == nargs[f[1]], f


def test_a_broken_simulator_rule_shows_in_the_guest_records(monkeypatch):
    """A rule broken on purpose (EVTCHNOP_unmask forgets to raise a pending event) shows in the guest's own
    records: the scenario, the step, both outcomes, down to the selector bits."""
    monkeypatch.setenv("XENEVT_SIM_BREAK", "unmask-no-raise")
    broken = sim_guest_records()
    monkeypatch.delenv("XENEVT_SIM_BREAK")
    good = sim_guest_records()
    name = "g-2l-unmask-re-raises-pending"
    (msg,) = differences(good[name], broken[name])
    lines = msg.splitlines()
    assert lines[0] == f"scenario {name}, step 6: unmask a"
    assert "v2 v1 upcall=1 sel=0x1" in lines[1] and "v2 v1 upcall=0 sel=0x0" in lines[2]
    problems = check_expectations(BY_NAME["g-2l-unmask-re-raises-pending"], broken[name])
    assert not problems  # (the port's own bits are the same: only the selector and upcall tell)


@pytest.fixture(scope="module")
def xen_guest():
    from tests.scenarios.guestrun import GuestRun, usable

    why = usable()
    if why:
        if REQUIRE_XEN:
            pytest.fail(f"XENEVT_REQUIRE_XEN=1 but the test guest cannot run: {why}")
        pytest.skip(why)
    with GuestRun(compile_program(GUEST_SCENARIOS), timeout=240) as g:  # (within the tests' 400 s, to say why)
        real = records(g.lines, GUEST_SCENARIOS, "xen")
        print(f"XENCI-GUEST booted in {g.seconds:.1f} s: {len(g.lines)} record lines")
        version = g.xen_version
    mine = sim_guest_records(version if version in ("4.17", "4.20") else "4.20")
    return real, mine


@pytest.mark.timeout(400)  # the first one boots the guest and runs all of them on the simulator (in dom0, under TCG)
@pytest.mark.parametrize("scenario", GUEST_SCENARIOS, ids=[f"xen-guest-{s.name}" for s in GUEST_SCENARIOS])
def test_guest_scenario_sim_vs_xen(scenario, xen_guest, request):
    real, mine = xen_guest
    if scenario.xfail_xen or scenario.sim_differs:
        request.applymarker(pytest.mark.xfail(reason=scenario.xfail_xen or scenario.sim_differs, strict=True))
    assert scenario.name in real, f"the guest printed no record of {scenario.name}"
    problems = differences(real[scenario.name], mine[scenario.name])
    print(f"XENCI-SCENARIO {'identical' if not problems else 'different'} {scenario.name}")
    assert not problems, "the simulator differs from real Xen:\n" + "\n".join(problems)
    problems = check_expectations(scenario, real[scenario.name])
    assert not problems, "real Xen differs from the scenario's expectation:\n" + "\n".join(problems)


# --- EVTCHNOP_reset of another domain: only a paused one (xen/common/event_channel.c: evtchn_reset) ------------
RESET_PROGRAM = """scenario dom0-resets-the-guest
0 alloc_unbound self 0
1 alloc_unbound self self
2 bind_interdomain self $1
end
"""


def _reset_story(reset, pause, status, bind_from_dom0, guest: int, ports: list[int]) -> list[str]:
    """dom0 binds to the guest's port offered to it, resets the running guest (refused), pauses it, resets it
    (its ports all closed, dom0's end back to waiting for it), in words both targets print the same."""
    out = []
    d0 = bind_from_dom0(guest, ports[0])
    out.append(f"dom0 bound: {status(0, d0)}")

    def attempt(what: str) -> None:
        try:
            reset(guest)
            out.append(f"{what}: ok")
        except ChannelError as e:
            out.append(f"{what}: {errno.errorcode.get(e.errno, e.errno)}")

    attempt("reset while running")
    pause(guest)
    attempt("reset while paused")
    out += [f"guest port {i}: {status(guest, p)}" for i, p in enumerate(ports)]
    out.append(f"dom0 end: {status(0, d0)}")
    return out


def _words(st, guest: int) -> str:
    text = f"{st.state} v{st.vcpu}"
    if st.state in ("unbound", "interdomain"):
        text += " guest" if st.remote_domain == guest else f" dom{st.remote_domain}"
    return text


@pytest.mark.timeout(400)
@pytest.mark.parametrize("case", ["xen-guest-dom0-resets-the-guest"])
def test_reset_of_another_domain_needs_it_paused_sim_vs_xen(case):
    from tests.scenarios.guestrun import GuestRun, usable

    why = usable()
    if why:
        if REQUIRE_XEN:
            pytest.fail(f"XENEVT_REQUIRE_XEN=1 but the test guest cannot run: {why}")
        pytest.skip(why)
    import subprocess

    from tests.scenarios.guestrun import find_xl

    def ports_of(lines: list[str]) -> list[int]:
        last = {}
        for line in lines:
            f = line.split()
            if f and f[0] == "PORT":
                last[int(f[1])] = int(f[2])
        return [last[k] for k in sorted(last)]

    x = XenTarget()
    try:
        with GuestRun(RESET_PROGRAM) as g:
            guest, ports = g.domid, ports_of(g.lines)
            d0 = []

            def bind(dom, port):
                d0.append(x.bind_interdomain(dom, port))
                return d0[-1]

            real = _reset_story(lambda d: x._libs.check(x.ctrl.xc_evtchn_reset(x.xc, d), "reset", d),
                                lambda d: subprocess.run([find_xl(), "pause", str(d)], check=True),
                                lambda d, p: _words(x.status(d, p), guest), bind, guest, ports)
            x.cleanup(d0)
    finally:
        x.close_target()
    sim = SimGuest()
    try:
        sim_ports = ports_of(sim.run(RESET_PROGRAM))
        h = sim.host
        mine = _reset_story(lambda d: h.reset(0, d), h.pause, lambda d, p: _words(h.status(0, d, p), 1),
                            lambda d, p: h.bind_interdomain(0, 0, d, p, masked=True), 1, sim_ports)
    finally:
        sim.close()
    print(f"XENCI-SCENARIO {'identical' if real == mine else 'different'} dom0-resets-the-guest")
    assert real == mine, "the simulator differs from real Xen:\n" + "\n".join(
        f"    xen {a!r:60} sim {b!r}" for a, b in zip(real, mine, strict=False))
    assert real[1:3] == ["reset while running: EINVAL", "reset while paused: ok"]
    assert real[-1] == "dom0 end: unbound v0 guest"


def test_reset_of_another_domain_needs_it_paused_on_sim():
    sim = SimGuest()
    try:
        lines = sim.run(RESET_PROGRAM)
        ports = sorted({int(f.split()[2]) for f in lines if f.startswith("PORT ")})
        h = sim.host
        story = _reset_story(lambda d: h.reset(0, d), h.pause, lambda d, p: _words(h.status(0, d, p), 1),
                             lambda d, p: h.bind_interdomain(0, 0, d, p, masked=True), 1, ports)
    finally:
        sim.close()
    assert story == ["dom0 bound: interdomain v0 guest", "reset while running: EINVAL", "reset while paused: ok",
                     "guest port 0: closed v0", "guest port 1: closed v0", "guest port 2: closed v0",
                     "dom0 end: unbound v0 guest"]
