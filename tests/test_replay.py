"""Replays of historical event-channel bugs (xenevt/replay, ``xenevt sim replay``): each one's fault brings its
symptom back and doctor names it and the bug, in the C engine and the Python reference alike; with the switch off
the same workload is healthy; the switches are off everywhere else."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from xenevt.cli import main
from xenevt.engine import faults
from xenevt.evidence.history import BUGS
from xenevt.replay import catalogue, run

ROOT = Path(__file__).resolve().parent.parent
REPLAYS = [r.name for r in catalogue()]



@pytest.mark.parametrize("name", REPLAYS)
def test_the_bug_comes_back_and_doctor_names_it(name, sim_path):
    r = run(name)
    assert r.found, (name, sim_path, r.steps, [f.as_dict() for f in r.diagnosis.report.findings])
    if r.replay.nameable:
        assert r.named, f"{name}: the finding does not say it looks like {r.replay.bug}: {r.found}"
    else:  # (nothing tells this bug from another cause: no old bug named, least of all a wrong one)
        assert r.ok and not any(f.resembles for f in r.diagnosis.report.findings), r.found
    assert r.diagnosis.report.verdict != "healthy"
    assert faults.active() == 0, "the switch stays on after the replay"


@pytest.mark.parametrize("name", REPLAYS)
def test_the_same_workload_on_the_fixed_code_is_healthy(name, sim_path):
    """Healthy, or (where the replay declares what the fix rightly leaves: a rogue peer throttled, a guest held at
    its limit) only those findings; never one that looks like an old bug."""
    r = run(name, fixed=True)
    assert r.ok, (name, sim_path, r.steps, [f.as_dict() for f in r.diagnosis.report.findings])
    assert not any(f.resembles for f in r.diagnosis.report.findings)
    if not r.replay.fixed_findings:
        assert r.diagnosis.report.verdict == "healthy"


def test_each_replay_names_a_catalogued_bug_once():
    bugs = [r.bug for r in catalogue()]
    assert all(b in BUGS for b in bugs)
    for b in BUGS.values():  # (one style in --list and doctor's "looks like:")
        assert b.title[:1].isupper() and not b.title.endswith(".") and b.fix and b.symptom, b
    assert len(set(REPLAYS)) == len(REPLAYS)


def test_the_fixed_order_each_replay_undoes_is_proven_on_real_xen_by_scenarios_that_exist():
    from tests.scenarios.catalog import BY_NAME

    for r in catalogue():
        assert all(name in BY_NAME for name in r.real_xen), (r.name, r.real_xen)


def test_the_switches_are_off_unless_a_replay_turns_one_on():
    from xenevt._native import lib

    assert faults.active() == 0 and lib.xe_faults_get() == 0
    with faults.switched_on(faults.READY_EVERY_ADD):
        assert lib.xe_faults_get() == faults.READY_EVERY_ADD
        with pytest.raises(RuntimeError), faults.switched_on(faults.READY_EVERY_ADD):
            pass
    assert faults.active() == 0 and lib.xe_faults_get() == 0


def test_the_c_header_and_python_agree_on_the_switches():
    from xenevt._native import lib

    header = (ROOT / "csrc" / "xenevt_fifo_api.h").read_text()
    c = dict(re.findall(r"#define XE_(FAULT_\w+|POINT_\w+) (\d+)", header))
    assert c, "no switches in the header"
    for name, value in c.items():
        assert getattr(faults, name.removeprefix("FAULT_")) == int(value) == getattr(lib, f"XE_{name}"), name


def test_a_hook_raising_under_c_is_raised_when_the_switch_goes_off(tmp_path):
    from xenevt.sim.host import SimHost, create_host

    create_host(str(tmp_path), percpu=True, force=True)

    def boom(point, port):
        raise ValueError(f"hook at {point} for {port}")

    with SimHost(str(tmp_path)) as h:
        ports = [h.alloc_unbound(1, 1, 0) for _ in range(2)]
        peers = [h.bind_interdomain(0, 0, 1, p) for p in ports]
        with pytest.raises(ValueError, match="hook at 1"), faults.switched_on(faults.READY_EVERY_ADD, boom):
            h.send(0, 0, peers[0])
            h.send(0, 0, peers[1])  # (linked at a tail: the hook's point)
    assert faults.active() == 0


def test_list_and_one_replay_from_the_cli(capsys, tmp_path):
    assert main(["sim", "replay", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["replays"]
    assert [r["name"] for r in listed] == REPLAYS
    assert all(r["fix"] and r["symptom"] and r["where"] in ("Xen", "Linux") for r in listed)
    name = REPLAYS[0]
    keep = tmp_path / "kept"
    assert main(["sim", "replay", name, "--keep", str(keep)]) == 0
    out = capsys.readouterr().out
    assert "looks like:" in out and "found" in out and f"--state {keep}" in out
    assert main(["--state", str(keep), "doctor", "--json"]) == 3  # the kept host: doctor sees it again
    assert json.loads(capsys.readouterr().out)["verdict"] == "problems"


@pytest.mark.parametrize("argv, why", [
    (["sim", "replay", "no-such-bug"], "no replay named 'no-such-bug'"),
    (["sim", "replay", "--fixed"], "name a replay for --fixed"),
    (["sim", "replay", "--list", "xen-ready-every-add"], "--list takes no replay name"),
    (["-b", "xen", "sim", "replay", "--list"], "never reaches a real hypervisor"),
])
def test_usage_errors(argv, why, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert why in err and len(err.strip().splitlines()) == 1


def test_keep_refuses_a_folder_with_something_in_it(tmp_path, capsys):
    (tmp_path / "x").write_text("mine")
    assert main(["sim", "replay", REPLAYS[0], "--keep", str(tmp_path)]) != 0
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "x").read_text() == "mine"


def test_the_readme_table_has_every_replay():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| replay |"):]
    for r in catalogue():
        assert f"`{r.name}`" in table, r.name
