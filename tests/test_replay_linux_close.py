"""The switch of the simulated Linux's CPU hotplug that xenevt/replay/linux_close.py turns on (CPU_DEAD_NO_DRAIN:
Linux before fcdf31a7c162): it leaves an offlined CPU's queues undrained only while on, a hotplug run under it
stays consistent (sim check), and the signature names that bug only where the kernel closed or moved a port
still LINKED on the down vCPU's queue, not for an event merely queued on a vCPU downed behind its back."""

from __future__ import annotations

import pytest

from xenevt import abi
from xenevt._front.host import open as open_host
from xenevt.engine import faults
from xenevt.sim.check import check_host
from xenevt.sim.host import SimHost, create_host

BUG = "linux-close-linked-offline"



@pytest.fixture
def state(tmp_path):
    d = str(tmp_path / "host")
    create_host(d, nr_domains=2, nr_vcpus=2, percpu=True, abi="fifo", force=True)
    return d


def _moved_while_linked(h: SimHost) -> int:
    """A frontend's port on vCPU 1, raised by dom0 and not yet handled: its word LINKED on vCPU 1's queue."""
    port = h.alloc_unbound(1, 1, 0)
    peer = h.bind_interdomain(0, 0, 1, port)
    h.bind_vcpu(1, 1, port, 1)
    h.send(0, 0, peer)
    return port


def _findings(state: str) -> list:
    with open_host("sim", state) as host:
        return host.doctor().report.findings


@pytest.mark.parametrize("on", [False, True])
def test_the_switch_alone_decides_whether_the_dead_cpus_queues_are_drained(state, sim_path, on):
    with SimHost(state) as h:
        port = _moved_while_linked(h)
        if on:
            with faults.switched_on(faults.CPU_DEAD_NO_DRAIN):
                done = h.cpu_down(1, 1, 1)
        else:
            done = h.cpu_down(1, 1, 1)
        word = h.domains[1].mem.word(port)
        assert word is not None and word & abi.WORD_PENDING
        assert bool(word & abi.WORD_LINKED) is on, hex(word)
        assert any(line.startswith("drained") for line in done) is not on
    assert faults.active() == 0
    assert check_host(state)[0] == []
    found = _findings(state)
    if on:
        assert [(f.rule, f.resembles) for f in found if f.rule == "queued-on-down-vcpu"] == [
            ("queued-on-down-vcpu", BUG)]
    else:  # (the dropped event: PENDING, on no queue, until its next event relinks it, as on Linux)
        assert not [f for f in found if f.rule == "queued-on-down-vcpu" or f.resembles], found


def test_an_event_queued_on_a_vcpu_downed_behind_the_kernels_back_is_not_the_bug(state, sim_path):
    with SimHost(state) as h:
        ipi = h.bind_ipi(1, 1, 1)
        h.vcpu_op(1, 1, 1, up=False)  # (VCPUOP_down alone: nothing moved, closed or drained)
        h.send(1, 1, ipi)
    found = [f for f in _findings(state) if f.rule == "queued-on-down-vcpu"]
    assert found and ipi in found[0].ports
    assert found[0].resembles is None
