"""The differential scenarios (tests/scenarios): on the simulator against what each scenario says Xen does,
and in the nested runner on real Xen against the simulator run in the same process (``xen-real``).

XENEVT_SIM_BREAK=<rule> makes one simulator rule deliberately wrong (xenevt/sim/hypercalls.py): the suite must
then fail naming the scenario and showing both outcomes.
"""

from __future__ import annotations

import os

import pytest

from tests.scenarios import check_expectations, differences, run
from tests.scenarios.catalog import BY_NAME, SCENARIOS
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
