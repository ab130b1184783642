"""The switches of Xen's Python-side event-channel code (xenevt/sim) that the replays of xenevt/replay/xen_sim.py
turn on: each puts its bug's order back only while on, a reset split in two by one stays kill-safe, and the
doctor rules that name their symptoms stay quiet on the states Xen's fixed code leaves."""

from __future__ import annotations

import pytest

from xenevt import abi
from xenevt._front.host import open as open_host
from xenevt.engine import faults
from xenevt.engine.layout import ABI_FIFO
from xenevt.errors import StateError
from xenevt.sim.check import check_host
from xenevt.sim.foreign import CONTROL_BLOCK_GFN
from xenevt.sim.host import SimHost, create_host
from xenevt.sim.statefile import K_RESET

from .test_crash import Killed
from .test_replay_linux_close import _moved_while_linked


@pytest.fixture
def state(tmp_path):
    d = str(tmp_path / "host")
    create_host(d, nr_domains=2, nr_vcpus=2, max_ports_dom0=64, max_ports_domu=64)
    return d


def _busy_port(h: SimHost) -> int:
    """A port of d1 closed while its event is LINKED on vCPU 1's queue."""
    p = _moved_while_linked(h)
    h.close_port(1, 1, p)
    assert h.domains[1].mem.word(p) & abi.WORD_LINKED
    return p


def test_a_busy_port_is_handed_out_only_with_the_switch_on(state, sim_path):
    with SimHost(state) as h:
        busy = _busy_port(h)
        assert h.bind_ipi(1, 1, 0) != busy  # Xen since 78e24c269b: skipped while LINKED
        with faults.switched_on(faults.REUSE_BUSY_PORT):
            assert h.bind_ipi(1, 1, 0) == busy
        assert faults.active() == 0


def _doctor(state: str):
    with open_host("sim", state) as host:
        return host.doctor().report.findings


def test_a_movable_port_queued_on_another_vcpu_is_not_called_a_reused_busy_port(state):
    with SimHost(state) as h:
        p = h.alloc_unbound(1, 1, 0)
        peer = h.bind_interdomain(0, 0, 1, p)
        h.send(0, 0, peer)  # LINKED on vCPU 0's queue
        h.bind_vcpu(1, 1, p, 1)  # then moved: normal, its next event goes to vCPU 1
    rules = {f.rule for f in _doctor(state)}
    assert "queued-on-wrong-vcpu" not in rules and "queued-elsewhere" in rules


def test_a_reset_split_by_the_switch_runs_the_racer_between_its_halves(state, sim_path):
    with SimHost(state) as h:
        h.bind_ipi(1, 1, 0)
        seen = []

        def racer(point, port):
            seen.append((point, h.domains[1].mem.event_abi, sorted(h.domains[1].open_ports())))

        with faults.switched_on(faults.RESET_UNLOCKED, racer):
            h.reset(1, 1)
        assert seen == [(faults.POINT_RESET_CLOSED, ABI_FIFO, [])]  # closed, not yet switched
        assert h.domains[1].mem.event_abi == ABI_FIFO  # (its Linux kernel chose FIFO again after the switch)
        h.reset(1, 1)  # and off, no point reached
    assert len(seen) == 1


@pytest.mark.parametrize("half, steps", [(0, 0), (0, 1), (0, 3), (1, 0)])  # (the switching half: one step)
def test_each_half_of_a_split_reset_cut_short_is_redone_by_the_next_open(state, half, steps, monkeypatch):
    with SimHost(state) as h:
        for _ in range(4):
            h.send(0, 0, h.bind_interdomain(0, 0, 1, h.alloc_unbound(1, 1, 0)))
        calls = {"transact": 0, "points": 0}
        transact, point = h.journal.transact, h.file.crash_point

        def counting_transact(op, caller, entries):
            calls["transact"] += 1
            transact(op, caller, entries)

        def crash_point():
            if calls["transact"] == half + 1:
                calls["points"] += 1
                if calls["points"] > steps:
                    raise Killed
            point()

        monkeypatch.setattr(h.journal, "transact", counting_transact)
        monkeypatch.setattr(h.file, "crash_point", crash_point)
        with pytest.raises(Killed), faults.switched_on(faults.RESET_UNLOCKED):
            h.reset(1, 1)
    assert faults.active() == 0
    with SimHost(state) as h:
        assert h.recovered and h.recovered[0].startswith("redid reset"), h.recovered
        assert not list(h.domains[1].open_ports())  # the closing half done whole either way
    assert check_host(state)[0] == []


def test_a_reset_entry_naming_no_half_is_refused_as_corrupt(state, monkeypatch):
    with SimHost(state) as h:
        monkeypatch.setattr(h.effects, "apply", lambda entries: (_ for _ in ()).throw(Killed()))
        with pytest.raises(Killed):
            h.journal.transact("reset", 1, [(K_RESET, 1, 7, b"")])
    with pytest.raises(StateError, match="intent.entries.0..index: 7 is no part of a reset"):
        SimHost(state)


def test_a_port_above_4095_on_fifo_is_no_finding(tmp_path):
    d = str(tmp_path / "h")
    create_host(d, nr_domains=2, nr_vcpus=2, max_ports_domu=8192, abis={1: "2l"})
    with SimHost(d) as h:
        for v in range(2):
            h.init_control(1, 1, v, CONTROL_BLOCK_GFN + v, 0)  # (the guest on FIFO)
        port = 0
        while port < abi.EVTCHN_2L_NR_CHANNELS:
            port = h.bind_ipi(1, 1, 0)
    assert "port-beyond-2l-limit" not in {f.rule for f in _doctor(d)}  # on FIFO: a port like any other
