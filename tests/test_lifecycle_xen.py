"""A real Linux domU's CPU taken down and up (``xl vcpu-set``: the toolstack asks the guest, whose kernel runs its
CPU hotplug path), compared port for port with the simulator's run of the same path on a replica of the domU's
table (tests/scenarios/hotplug.py).  Run in dom0 by the nested Xen runner (ci/xen), skipped elsewhere; needs a
domU with 2 vCPUs online (XENCI_DOMU, XENCI_DOMU_2L).

What must hold: the ports Linux moves (interdomain, unbound, global VIRQs) go to the online CPU, the CPU's IPIs
and per-CPU VIRQs are closed; coming back, they are bound again at the lowest free ports in Linux's order; the
FIFO domU keeps every control block (its own dump says so); doctor finds nothing wrong in between.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.scenarios import hotplug

HAVE_XEN = os.path.exists("/dev/xen/evtchn")
if not HAVE_XEN:
    if os.environ.get("XENEVT_REQUIRE_XEN") == "1":
        pytest.fail("XENEVT_REQUIRE_XEN=1 but /dev/xen/evtchn does not exist", pytrace=False)
    pytest.skip("not running on Xen", allow_module_level=True)

from xenevt.backend import select_backend  # noqa: E402

pytestmark = pytest.mark.xen
XL = shutil.which("xl") or "xl"
SETTLE = 60.0  # seconds a hotplug may take in the nested runner (TCG)


def _domu(var: str) -> int:
    if os.environ.get(f"{var}_ERROR"):
        pytest.fail(f"the runner could not start the domU: {os.environ[f'{var}_ERROR']}")
    if not os.environ.get(var):
        pytest.skip(f"no domU here ({var}: the nested runner starts one)")
    return int(os.environ[var])


def online_vcpus(domu: int) -> list[int]:
    """The domU's vCPUs that are up, as ``xl vcpu-list`` shows them (an offline vCPU has CPU "-")."""
    out = subprocess.run([XL, "vcpu-list", str(domu)], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    return [int(r[2]) for r in rows if r[3] != "-"]


def cmdline(domu: int) -> str:
    out = subprocess.run([XL, "list", "-l", str(domu)], capture_output=True, text=True, check=True).stdout
    return json.dumps(json.loads(out))


def settled_table(xen, domu: int, done) -> dict:
    """The domU's table once ``done(table)`` holds and two reads a second apart agree."""
    deadline = time.monotonic() + SETTLE
    last = None
    while time.monotonic() < deadline:
        table = hotplug.table_of(xen.list_ports(domu))
        if done(table) and table == last:
            return table
        last = table
        time.sleep(1)
    pytest.fail(f"domain {domu}'s ports did not settle in {SETTLE:.0f} s: {last}")


def doctor_errors(domu: int) -> list:
    r = subprocess.run([sys.executable, "-m", "xenevt", "--json", "doctor", "-d", str(domu)], capture_output=True,
                       text=True, timeout=300)
    return [f for f in json.loads(r.stdout)["findings"] if f["severity"] == "error" or f["rule"] in (
        "queued-on-down-vcpu", "vcpu-without-control-block")]


@pytest.mark.parametrize("var,two_level", [("XENCI_DOMU", False), ("XENCI_DOMU_2L", True)], ids=["fifo", "2l"])
def test_a_domus_cpu_offlined_and_onlined_as_the_simulator_predicts(tmp_path, var, two_level):
    domu = _domu(var)
    xen = select_backend("xen")
    try:
        if online_vcpus(domu) != [0, 1]:
            pytest.skip(f"domain {domu} has vCPUs {online_vcpus(domu)} online: the scenario needs 2 (vcpus = 2 in "
                        "ci/xen/init.sh)")
        before = settled_table(xen, domu, lambda t: True)
        print(f"domain {domu} before: {before}")
        rep = str(tmp_path / "replica")
        hotplug.replica(rep, before, 2, two_level)
        want_down = hotplug.predict(rep, 1, up=False)
        subprocess.run([XL, "vcpu-set", str(domu), "1"], check=True)
        down = settled_table(xen, domu, lambda t: online_vcpus(domu) == [0] and all(r[1] == 0 for r in t.values()))
        assert down == want_down, (down, want_down)
        assert doctor_errors(domu) == []
        want_up = hotplug.predict(rep, 1, up=True)
        if "nopvspin" not in cmdline(domu):  # Linux's PV spinlock kicker, bound once the CPU is online
            want_up = hotplug.with_spinlock_kicker(want_up, 1)
        subprocess.run([XL, "vcpu-set", str(domu), "2"], check=True)
        # the toolstack makes the CPU present; the guest's userspace (udev, here domu_check.py) puts it online
        from tests.test_on_xen import ask_domu

        assert ask_domu(domu, "online", "1", wait=120) == {"online": 1}
        up = settled_table(xen, domu, lambda t: online_vcpus(domu) == [0, 1] and len(t) == len(want_up))
        assert up == want_up, (up, want_up)
        assert doctor_errors(domu) == []
        if not two_level:  # the control block kept across down: no second init_control (its own dump says)
            from tests.test_on_xen import look_again

            assert all(look_again(domu)["control_blocks"])
    finally:
        if online_vcpus(domu) != [0, 1]:
            subprocess.run([XL, "vcpu-set", str(domu), "2"], check=False)
            subprocess.run(["xenstore-write", f"/local/domain/{domu}/data/xenci-request", "cmdrestore online 1"],
                           check=False)
        xen.shutdown()
