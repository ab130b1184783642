"""vCPUs going down and up on the simulator: Xen's VCPUOP_down/up alone, and Linux's CPU hotplug path over them
(xenevt/sim/lifecycle.py), with the per-CPU ports a simulated Linux binds (sim/domain.py percpu_ports)."""

from __future__ import annotations

import json
import os
import struct

import pytest

from xenevt import abi
from xenevt.abi import ECS_INTERDOMAIN, ECS_IPI, ECS_VIRQ, VIRQS
from xenevt.cli import main
from xenevt.engine.layout import VCPU_DOWN, VCPU_NEVER_UP, VCPU_ONLINE, VCPU_STATE_OFFSET
from xenevt.errors import ChannelError, StateError, XenevtError
from xenevt.sim.check import check_host
from xenevt.sim.host import FILE_NAME, SimHost, create_host
from xenevt.sim.statefile import VERSION

TIMER, DEBUG = VIRQS["timer"], VIRQS["debug"]


def table(h: SimHost, d: int) -> list[tuple[int, int, int, int]]:
    """(port, state, vCPU, aux) of every open port of domain ``d``."""
    dom = h.file.domains[d]
    return [(p, dom.mem.chan(p).state, dom.mem.chan(p).notify_vcpu, dom.mem.chan(p).aux) for p in dom.open_ports()]


def percpu(v: int, first: int, two_level: bool = False) -> list[tuple[int, int, int, int]]:
    """What Linux binds for CPU ``v`` from port ``first`` on: VIRQ_TIMER, resched, callfunc, [VIRQ_DEBUG],
    callfuncsingle, irq_work."""
    kinds = [(ECS_VIRQ, TIMER), (ECS_IPI, 0), (ECS_IPI, 0)] + ([(ECS_VIRQ, DEBUG)] if two_level else []) + \
        [(ECS_IPI, 0), (ECS_IPI, 0)]
    return [(first + i, s, v, aux) for i, (s, aux) in enumerate(kinds)]


@pytest.fixture
def state(tmp_path):
    d = str(tmp_path / "host")
    create_host(d, nr_domains=2, nr_vcpus=3, online=2, percpu=True, abis={1: "fifo"})
    return d


def test_a_booted_linux_binds_per_online_cpu_in_linuxs_order(state, tmp_path):
    with SimHost(state) as h:
        for d in (0, 1):
            mem = h.file.domains[d].mem
            assert table(h, d) == percpu(0, 1) + percpu(1, 6)  # (FIFO: no VIRQ_DEBUG since Linux 5.10)
            assert mem.vcpu_states() == [VCPU_ONLINE, VCPU_ONLINE, VCPU_NEVER_UP]
            assert [mem.cb_offset(v) for v in range(3)] == [0, 0, None]  # never up: no control block
            assert all(mem.word(p) == 0 for p, *_ in table(h, d))  # bound, unmasked, nothing pending
    two = str(tmp_path / "2l")
    create_host(two, nr_domains=1, nr_vcpus=2, abi="2l", percpu=True)
    with SimHost(two) as h:
        assert table(h, 0) == percpu(0, 1, True) + percpu(1, 7, True)
        assert not any(h.file.domains[0].mem.l2_bit("mask", p) for p, *_ in table(h, 0))
    plain = str(tmp_path / "plain")
    create_host(plain, nr_domains=1)  # (without --percpu: no port at boot, as before)
    with SimHost(plain) as h:
        assert table(h, 0) == []


def test_linux_takes_a_cpu_down_in_its_order(state):
    with SimHost(state) as h:
        p = h.alloc_unbound(1, 1, 0)
        q = h.bind_interdomain(0, 0, 1, p)
        h.bind_vcpu(1, 1, p, 1)
        m = h.alloc_unbound(1, 1, 0)  # a second port on vCPU 1, masked: it stays masked after the move
        h.bind_vcpu(1, 1, m, 1)
        h.mask(1, 1, m)
        mem = h.file.domains[1].mem
        steps = h.cpu_down(0, 1, 1)
        assert steps[:3] == [f"moved port {p} to vCPU 0", f"moved port {m} to vCPU 0", "VCPUOP_down of vCPU 1"]
        assert steps[3:] == [f"closed port {x}" for x in (7, 8, 9, 10, 6)]  # IPIs, then the timer
        assert table(h, 1) == percpu(0, 1) + [(p, ECS_INTERDOMAIN, 0, 0), (m, 2, 0, 0)]
        assert mem.vcpu_states() == [VCPU_ONLINE, VCPU_DOWN, VCPU_NEVER_UP]
        assert mem.cb_offset(1) == 0  # Xen keeps the control block across down
        assert mem.word(p) & abi.WORD_MASKED == 0 and mem.word(m) & abi.WORD_MASKED
        h.send(0, 0, q)  # the moved port delivers on vCPU 0
        assert h.consume(1, 0) == [p]
        with pytest.raises(ChannelError, match=r"vCPU 1 is down: no upcall handler runs on it .*\(EINVAL\)"):
            h.consume(1, 1)


def test_the_drain_unlinks_what_was_queued_on_the_cpu_and_leaves_it_pending(state):
    with SimHost(state) as h:
        mem = h.file.domains[1].mem
        h.send(1, 1, 8)  # an IPI of CPU 1 queued, never handled before it goes down
        p = h.alloc_unbound(1, 1, 0)
        h.bind_vcpu(1, 1, p, 1)
        h.send(0, 0, h.bind_interdomain(0, 0, 1, p))  # ... and an interdomain event behind it
        assert mem.word(8) & abi.WORD_LINKED and mem.word(p) & abi.WORD_LINKED
        steps = h.cpu_down(0, 1, 1)
        assert steps[-1] == "drained 1 event(s) from vCPU 1's queues (left pending, not handled)"
        assert not any((mem.word(x) or 0) & abi.WORD_LINKED for x in range(1, 32))  # no busy port left
        assert mem.word(p) & abi.WORD_PENDING  # Linux drops it: pending, no longer queued
        assert h.cpu_up(0, 1, 1)[0] == "bound timer1 on port 6"  # the closed IPI's port is free again
        assert table(h, 1)[5:10] == percpu(1, 6)


def test_up_binds_at_the_lowest_free_ports_with_no_second_init_control(state):
    with SimHost(state) as h:
        mem = h.file.domains[1].mem
        h.cpu_down(1, 1, 1)
        extra = [h.alloc_unbound(1, 1, 0) for _ in range(3)]  # ports 6, 7, 8 taken meanwhile
        assert extra == [6, 7, 8]
        inits = []
        real = h.binds.init_control
        h.binds.init_control = lambda *a: inits.append(a) or real(*a)
        steps = h.cpu_up(1, 1, 1)
        assert steps == ["bound timer1 on port 9", "bound resched1 on port 10", "bound callfunc1 on port 11",
                         "bound callfuncsingle1 on port 12", "bound irqwork1 on port 13", "VCPUOP_up of vCPU 1"]
        assert inits == [] and mem.cb_offset(1) == 0
        assert h.cpu_up(1, 1, 1) == []  # already up: nothing, as echo 1 > online
        steps = h.cpu_up(0, 1, 2)  # never up: its control block now, after its ports
        assert steps[-2:] == ["registered vCPU 2's control block", "VCPUOP_up of vCPU 2"]
        assert len(inits) == 1 and mem.vcpu_states() == [VCPU_ONLINE] * 3


def test_xens_side_alone_a_down_vcpus_queues_still_take_events(state):
    with SimHost(state) as h:
        mem = h.file.domains[1].mem
        h.vcpu_op(1, 1, 1, up=False)  # VCPUOP_down behind Linux's back: nothing moved, nothing closed
        assert table(h, 1) == percpu(0, 1) + percpu(1, 6)
        p = h.alloc_unbound(1, 1, 0)
        h.bind_vcpu(1, 1, p, 1)  # Xen lets a port move to a down vCPU
        h.send(0, 0, h.bind_interdomain(0, 0, 1, p))
        assert mem.word(p) & abi.WORD_LINKED  # queued on vCPU 1, waiting
        assert h.raise_virq(1, TIMER, 1).outcome == "queued"
        with pytest.raises(ChannelError, match="is down"):
            h.claim_vcpu(1, 1, caller=1)
        h.vcpu_op(1, 1, 1, up=True)
        h.claim_vcpu(1, 1, caller=1)
        assert sorted(h.consume(1, 1)) == [6, p]  # delivered when it came back
        with pytest.raises(ChannelError, match=r"vCPU 2 was never initialised .*\(EINVAL\)"):
            h.vcpu_op(1, 1, 2, up=True)


def test_refusals(state):
    with SimHost(state) as h:
        with pytest.raises(ChannelError, match=r"Linux does not take CPU 0 down \(EBUSY\)"):
            h.cpu_down(1, 1, 0)
        with pytest.raises(ChannelError, match=r"vCPU 2 was never brought up \(EINVAL\)"):
            h.cpu_down(1, 1, 2)
        with pytest.raises(ChannelError, match=r"domain 1 may not operate on another domain's ports \(EPERM\)"):
            h.cpu_down(1, 0, 1)
        with pytest.raises(ChannelError, match=r"\(EPERM\)"):
            h.vcpu_op(0, 1, 1, up=False)  # VCPUOP is the domain's own hypercall, dom0's too
        h.claim_vcpu(1, 1, caller=1)
        with pytest.raises(ChannelError, match=r"a consumer runs as vCPU 1 .*\(EBUSY\)"):
            h.cpu_down(1, 1, 1)


def run_cycle(state: str) -> dict[int, bytes]:
    """A fixed hotplug history; every domain image's bytes after it (the consumer pids and upcall counts aside)."""
    with SimHost(state) as h:
        p = h.alloc_unbound(1, 1, 0)
        q = h.bind_interdomain(0, 0, 1, p)
        h.bind_vcpu(1, 1, p, 1)
        h.send(0, 0, q)
        h.send(1, 1, 9)
        h.cpu_down(0, 1, 1)
        h.send(0, 0, q)
        h.cpu_up(1, 1, 2)
        h.cpu_up(1, 1, 1)
        h.cpu_down(1, 1, 2)
        h.send(1, 1, 3)
        out = {}
        for d, dom in h.file.domains.items():
            img = bytearray(dom.mem.snapshot())
            img[2048:4096] = bytes(2048)  # upcall words (kick counts) and consumer pids
            out[d] = bytes(img)
        return out


def test_the_c_hot_path_and_the_python_reference_agree(tmp_path, monkeypatch):
    images = []
    for hot in ("c", "python"):
        d = str(tmp_path / hot)
        create_host(d, nr_domains=2, nr_vcpus=3, online=2, percpu=True)
        if hot == "python":
            monkeypatch.setenv("XENEVT_SIM_HOT", "python")
        images.append(run_cycle(d))
        assert check_host(d)[0] == []
    assert images[0] == images[1]


def test_a_hotplug_killed_at_every_step_is_finished_by_running_it_again(tmp_path):
    """Each step is its own hypercall; cut after any of them, the file is consistent and a second run ends where
    one uncut run ends."""
    from tests.test_crash import Killed

    whole = str(tmp_path / "whole")
    create_host(whole, nr_domains=2, nr_vcpus=2, percpu=True)
    with SimHost(whole) as h:
        h.bind_vcpu(1, 1, h.alloc_unbound(1, 1, 0), 1)
        n = len(h.cpu_down(1, 1, 1))
        want = table(h, 1)
    for cut_at in range(n):
        d = str(tmp_path / f"cut{cut_at}")
        create_host(d, nr_domains=2, nr_vcpus=2, percpu=True)
        with SimHost(d) as h:
            h.bind_vcpu(1, 1, h.alloc_unbound(1, 1, 0), 1)
            calls = [0]

            def cut(real, calls=calls, cut_at=cut_at):
                """``real``, but the process is killed at the ``cut_at``-th write of either kind."""
                def step(*a):
                    if calls[0] == cut_at:
                        raise Killed
                    calls[0] += 1
                    return real(*a)
                return step

            h.journal.transact = cut(h.journal.transact)
            h.xen._store_field = cut(h.xen._store_field)
            with pytest.raises(Killed):
                h.cpu_down(1, 1, 1)
        assert check_host(d)[0] == []
        with SimHost(d) as h:
            h.cpu_down(1, 1, 1)
            assert table(h, 1) == want and h.file.domains[1].mem.vcpu_state(1) == VCPU_DOWN


def test_an_old_file_reads_as_every_vcpu_online_and_a_state_change_makes_it_version_4(tmp_path):
    d = str(tmp_path / "old")
    create_host(d, nr_domains=2)
    path = os.path.join(d, FILE_NAME)
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", 3))
    with SimHost(d) as h:
        assert h.file.domains[1].mem.vcpu_states() == [VCPU_ONLINE, VCPU_ONLINE]
        h.cpu_down(1, 1, 1)
    with open(path, "rb") as f:
        assert struct.unpack_from("<I", f.read(12), 8)[0] == VERSION == 4
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", 5))
    with pytest.raises(StateError, match=r"unsupported state file version 5 \(this xenevt reads 3 and 4\)"):
        SimHost(d)


def test_a_bad_vcpu_state_byte_is_refused_naming_it(tmp_path):
    d = str(tmp_path / "bad")
    create_host(d, nr_domains=2)
    with SimHost(d) as h:
        at = h.file.domains[1].mem.offset + VCPU_STATE_OFFSET + 1
    with open(os.path.join(d, FILE_NAME), "r+b") as f:
        f.seek(at)
        f.write(b"\x07")
    with pytest.raises(XenevtError, match=rf"offset {at:#x}: field vcpu_state\[1\]: unknown vCPU state 7"):
        SimHost(d)


def test_cli(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path / "h"))
    assert main(["sim", "init", "--vcpus", "2", "--maxvcpus", "3", "--percpu"]) == 0
    assert "2 vCPU(s) each online of 3" in capfd.readouterr().out
    assert main(["sim", "vcpu", "down", "1", "1"]) == 0
    out = capfd.readouterr().out.splitlines()
    assert out[0] == "VCPUOP_down of vCPU 1" and out[-1] == "vCPU 1 of domain 1 is down"
    assert main(["--json", "--as", "0", "sim", "vcpu", "up", "1", "2"]) == 0
    doc = json.loads(capfd.readouterr().out)
    assert (doc["state"], doc["steps"][-1]) == ("online", "VCPUOP_up of vCPU 2")
    assert main(["sim", "info"]) == 0
    row = next(line.split() for line in capfd.readouterr().out.splitlines() if line.split()[:1] == ["1"])
    assert row[:4] == ["1", "no", "3", "0,2"]  # vCPUs 0 and 2 online
    assert main(["-d", "1", "list"]) == 0
    assert capfd.readouterr().out.splitlines()[0] == "domain 1: 10 open port(s); vCPU 1 down"
    assert main(["sim", "vcpu", "up", "1", "1", "--xen-only"]) == 0
    assert capfd.readouterr().out.splitlines() == ["VCPUOP_up of vCPU 1", "vCPU 1 of domain 1 is online"]
    assert main(["--as", "0", "sim", "vcpu", "down", "1", "1", "--xen-only"]) == 1
    err = capfd.readouterr().err
    assert err.startswith("xenevt: ") and err.endswith("(EPERM)\n") and err.count("\n") == 1
    assert main(["sim", "vcpu", "down", "1", "0"]) == 1
    assert capfd.readouterr().err == ("xenevt: cannot take down a vCPU of domain 1: Linux does not take CPU 0 "
                                      "down (EBUSY)\n")
    assert main(["sim", "vcpu", "down", "1", "x"]) == 2
    assert main(["sim", "init", "--force", "--yes", "--vcpus", "3", "--maxvcpus", "2"]) == 2
    assert "Invalid value for '--maxvcpus': 2 is fewer than the 3 vCPUs online at boot" in capfd.readouterr().err


def _doctor(state: str):
    from xenevt.backend import select_backend
    from xenevt.evidence import collect, doctor

    b = select_backend("sim", state_dir=state, read_only=True)
    try:
        return doctor.examine(collect.from_backend(b))
    finally:
        b.shutdown()


def test_doctor_is_quiet_through_a_plain_hotplug_cycle(state):
    with SimHost(state) as h:
        p = h.alloc_unbound(1, 1, 0)
        q = h.bind_interdomain(0, 0, 1, p)
        h.bind_vcpu(1, 1, p, 1)
        h.send(0, 0, q)
        assert h.consume(1, 1) == [p]  # the dying CPU handles what is queued for it
        h.cpu_down(0, 1, 1)
    assert _doctor(state).findings == []
    with SimHost(state) as h:
        h.send(0, 0, q)
        assert h.consume(1, 0) == [p]
        h.cpu_up(0, 1, 1)
        h.cpu_up(0, 1, 2)
    assert _doctor(state).findings == []


def test_doctor_names_events_queued_on_a_down_vcpu_and_a_vcpu_never_brought_up(state, capfd, monkeypatch):
    with SimHost(state) as h:
        h.vcpu_op(1, 1, 1, up=False)  # behind Linux's back: its IPIs and timer stay on it
        h.send(1, 1, 8)
        h.raise_virq(1, TIMER, 1)
        p = h.alloc_unbound(1, 1, 0)
        h.bind_vcpu(1, 1, p, 2)
    found = {(f.severity, f.rule, tuple(f.ports), f.vcpu): f for f in _doctor(state).findings}
    assert set(found) == {("warning", "queued-on-down-vcpu", (8, 6), 1),
                          ("error", "vcpu-without-control-block", (p,), 2)}
    f = found[("warning", "queued-on-down-vcpu", (8, 6), 1)]
    assert f.title == "2 event(s) queued on vCPU 1, which is down (priority 7)"
    assert "`xenevt sim vcpu up 1 1`" in f.advice
    f = found[("error", "vcpu-without-control-block", (p,), 2)]
    assert f.title.endswith("(never brought up)") and "vCPU 2 was never brought up" in f.evidence
    assert "offline" not in f.title and "merely taken offline keeps its block" in f.advice
    monkeypatch.setenv("XENEVT_STATE", state)
    assert main(["-d", "1", "dump"]) == 0
    text = capfd.readouterr().out
    assert "  vCPU 1 (down): READY 0x0080 [7]" in text
    assert "  vCPU 2 (never up): no control block (events for it are dropped)" in text


@pytest.mark.parametrize("two_level", [False, True], ids=["fifo", "2l"])
def test_the_real_xen_harness_predicts_a_simulated_guest_exactly(tmp_path, two_level):
    """tests/scenarios/hotplug.py, which test_lifecycle_xen.py runs against a real domU, checked here against a
    simulated guest standing in for it: the replica of its table predicts its hotplug port for port."""
    from tests.scenarios import hotplug

    real = str(tmp_path / "real")
    create_host(real, nr_domains=2, nr_vcpus=2, percpu=True, abis={1: "2l" if two_level else "fifo"})
    with SimHost(real) as h:
        p = h.alloc_unbound(1, 1, 0)
        h.bind_interdomain(0, 0, 1, p)  # a frontend's port on CPU 1, a hole, a global VIRQ moved there
        h.bind_vcpu(1, 1, p, 1)
        h.close_port(1, 1, h.bind_ipi(1, 1, 0))
        h.bind_vcpu(1, 1, h.bind_virq(1, 1, VIRQS["console"], 0), 1)
        h.alloc_unbound(1, 1, 0)
        before = hotplug.table_of(h.list_ports(0, 1))
    rep = str(tmp_path / "replica")
    hotplug.replica(rep, before, 2, two_level)
    with SimHost(rep) as h:
        assert hotplug.table_of(h.list_ports(0, 1)) == before
    for up in (False, True):
        want = hotplug.predict(rep, 1, up)
        with SimHost(real) as h:
            (h.cpu_up if up else h.cpu_down)(1, 1, 1)
            assert hotplug.table_of(h.list_ports(0, 1)) == want
    assert want != before  # (the IPIs came back at the lowest free ports, not where they were)
    assert hotplug.with_spinlock_kicker({1: ("ipi", 0, None, None), 3: ("ipi", 0, None, None)}, 1) == \
        {1: ("ipi", 0, None, None), 2: ("ipi", 1, None, None), 3: ("ipi", 0, None, None)}


@pytest.mark.parametrize("hot", ["c", "python"])
def test_no_upcall_handler_runs_on_a_down_vcpu_in_c_or_python(tmp_path, monkeypatch, hot):
    if hot == "python":
        monkeypatch.setenv("XENEVT_SIM_HOT", "python")
    d = str(tmp_path / hot)
    create_host(d, nr_domains=2, nr_vcpus=2, percpu=True)
    with SimHost(d) as h:
        h.claim_vcpu(1, 1, caller=1)
        h.send(1, 1, 7)
        h.vcpu_op(1, 1, 1, up=False)
        with pytest.raises(ChannelError, match=r"vCPU 1 is down: no upcall handler runs on it"):
            h.consume(1, 1, timeout=0.2, caller=1)
        h.vcpu_op(1, 1, 1, up=True)
        assert h.consume(1, 1, timeout=0, caller=1) == [7]


def test_a_cpu_down_across_a_reset_comes_up_with_a_clean_control_block(state):
    """EVTCHNOP_reset lets every control block go; the kernel that follows registers its online CPUs' only, and a
    CPU coming up later clears its page before its own init_control (Linux's init_control_block): what the old
    queues left there is not taken for events."""
    with SimHost(state) as h:
        mem = h.file.domains[1].mem
        h.cpu_down(1, 1, 1)
        h.vcpu_op(1, 1, 1, up=True)  # (behind the kernel's back: an event queued on it, never consumed)
        h.bind_vcpu(1, 1, h.alloc_unbound(1, 1, 0), 1)
        p = h.alloc_unbound(1, 1, 0)
        h.bind_vcpu(1, 1, p, 1)
        h.send(0, 0, h.bind_interdomain(0, 0, 1, p))
        h.vcpu_op(1, 1, 1, up=False)
        assert mem.control_block(1)[0]  # READY set on the down vCPU's block
        h.reset(1, 1)
        assert mem.cb_offset(1) is None and mem.cb_offset(0) == 0
        assert "registered vCPU 1's control block" in h.cpu_up(1, 1, 1)
        assert list(mem.control_block(1)) == [0] * 18
    assert check_host(state)[0] == []
