"""doctor on a simulated host that is busy: a guest raising and handling events the whole time it looks.

A healthy host is never called broken, whatever instant a look lands on.  Two things made looks land on half-made
states: a read-only host's private mapping showed the file's own pages until written (so a writer's later updates
showed through, half made), and a guest's upcall handler takes no lock (Linux's does not), so even a copy under
the host lock could catch one midway (a LINK cleared, the local head not yet moved on).  The copy is now owned
page by page under the lock and made again while an upcall count (xe_guest_vcpu's seqcount) says one ran.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest

import xenevt
from xenevt.engine import DomainMemory
from xenevt.memory.live import LiveSource
from xenevt.sim.host import SimHost, create_host


def _busy(state: str, ports: list[tuple[int, int]], stop) -> None:  # pragma: no cover - a child process
    with SimHost(state) as h:
        while not stop.is_set():
            for _, theirs in ports:
                h.send(0, 0, theirs)
            h.consume(1, 0, 64)


def _looks(tmp_path, abi: str, seconds: float) -> tuple[int, list]:
    state = str(tmp_path / "st")
    create_host(state, nr_domains=2, nr_vcpus=2, abi=abi, force=True)
    with SimHost(state) as h:
        ports = []
        for _ in range(20):
            mine = h.alloc_unbound(1, 1, 0)
            ports.append((mine, h.bind_interdomain(0, 0, 1, mine)))
    ctx = multiprocessing.get_context("spawn")  # (no fork of a process that has loaded the simulator's threads)
    stop = ctx.Event()
    writer = ctx.Process(target=_busy, args=(state, ports, stop))
    writer.start()
    looks, wrong = 0, []
    try:
        deadline = time.monotonic() + seconds
        with xenevt.open("sim", state) as host:
            while time.monotonic() < deadline:
                host.refresh()
                report = host.doctor().report
                looks += 1
                if report.findings:
                    wrong.append([(f.rule, f.severity, f.domain, f.ports) for f in report.findings])
    finally:
        stop.set()
        writer.join(30)
    assert writer.exitcode == 0
    return looks, wrong


@pytest.mark.parametrize("abi", ["fifo", "2l"])
def test_doctor_on_a_busy_host_finds_nothing(tmp_path, abi):
    looks, wrong = _looks(tmp_path, abi, 2.0)
    assert looks > 20 and not wrong, (looks, len(wrong), wrong[:2])


@pytest.mark.slow
@pytest.mark.parametrize("abi", ["fifo", "2l"])
def test_doctor_on_a_busy_host_finds_nothing_for_8_seconds(tmp_path, abi):
    looks, wrong = _looks(tmp_path, abi, 8.0)
    assert looks > 80 and not wrong, (looks, len(wrong), wrong[:2])


def test_a_copy_made_while_an_upcall_runs_is_not_taken_for_the_guests_own_state(tmp_path):
    state = str(tmp_path / "st")
    create_host(state, nr_domains=2, nr_vcpus=2, force=True)
    with SimHost(state) as h:
        mem = h.file.domains[1].mem
        data, settled = mem.settled_snapshot()
        assert settled and DomainMemory(bytearray(data)).upcall_counts() == [0, 0]
        h.send(1, 1, h.bind_ipi(1, 1, 0))
        assert h.consume(1, 0, 16)
        assert mem.upcall_counts()[0] == 2  # (one upcall: odd, then even again)
        assert not h.consume(1, 0, 16) and mem.upcall_counts()[0] == 2  # (nothing READY: no upcall, no write)
        end = mem.begin_upcall(1)
        assert mem.upcall_counts() == [2, 1] and end == 2 << 16
        assert mem.settled_snapshot(tries=2) == (mem.snapshot(), False)

        class Backend:
            name = "sim"

            def fifo_memory(self, domain):
                return mem

            def vcpu_states(self, domain):
                return None

        assert not LiveSource(Backend(), 1).image().guest_known
        mem.end_upcall(1, end)
        assert mem.upcall_counts() == [2, 2] and mem.settled_snapshot()[1]
        assert LiveSource(Backend(), 1).image().guest_known
        mem.begin_upcall(0)  # a consumer killed midway leaves it odd: mending the vCPU makes it even
        assert mem.end_upcall(0) and mem.upcall_counts() == [4, 2] and not mem.end_upcall(0)
