"""The differential scenarios (tests/scenarios): on the simulator against what each scenario says Xen does,
and in the nested runner on real Xen against the simulator run in the same process (``xen-real``).

XENEVT_SIM_BREAK=<rule> makes one simulator rule deliberately wrong (xenevt/sim/hypercalls.py): the suite must
then fail naming the scenario and showing both outcomes.
"""

from __future__ import annotations

import os

import pytest

from tests.scenarios import check_expectations, differences, run
from tests.scenarios.catalog import BY_NAME, GUEST_SCENARIOS, SCENARIOS
from tests.scenarios.guest import SimGuest, compile_program, records
from tests.scenarios.targets import SimTarget, XenTarget

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
    with GuestRun(compile_program(GUEST_SCENARIOS), timeout=240) as g:
        real = records(g.lines, GUEST_SCENARIOS, "xen")
        print(f"XENCI-GUEST booted in {g.seconds:.1f} s: {len(g.lines)} record lines")
        version = g.xen_version
    mine = sim_guest_records(version if version in ("4.17", "4.20") else "4.20")
    return real, mine


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
