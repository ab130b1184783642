"""The simulated host follows Xen's rules (event_channel.c) and Linux's guest side."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing as mp
import os

import pytest

from xenevt import abi
from xenevt.errors import ChannelError, StateError
from xenevt.sim.host import FILE_NAME, SimHost, create_host


@pytest.fixture
def host(tmp_path):
    create_host(str(tmp_path), nr_domains=3, nr_vcpus=2)
    with SimHost(str(tmp_path)) as h:
        yield h


def connect(h):
    p1 = h.alloc_unbound(1, 1, 0)
    p0 = h.bind_interdomain(0, 0, 1, p1)
    return p0, p1


def errno_of(excinfo):
    return excinfo.value.errno


def test_interdomain_bind_leaves_local_port_pending_once(host):
    p0, p1 = connect(host)
    assert host.status(0, 0, p0).remote_port == p1
    assert host.status(0, 1, p1).state == "interdomain"
    assert host.consume(0, 0, timeout=0) == [p0]
    assert host.consume(0, 0, timeout=0) == []


def test_send_both_ways_and_close_leaves_other_end_unbound(host):
    p0, p1 = connect(host)
    host.consume(0, 0, timeout=0)
    assert host.send(0, 0, p0).outcome == "queued"
    assert host.consume(1, 0, timeout=0) == [p1]
    host.close_port(1, 1, p1)
    st = host.status(0, 0, p0)
    assert (st.state, st.remote_domain) == ("unbound", 1)
    with pytest.raises(ChannelError, match="port is unbound") as e:
        host.send(0, 0, p0)
    assert errno_of(e) == errno.ENOTCONN
    with pytest.raises(ChannelError, match="not bound") as e:
        host.send(1, 1, p1)
    assert errno_of(e) == errno.EINVAL


def test_domain_may_only_touch_its_own_ports(host):
    p0, p1 = connect(host)
    with pytest.raises(ChannelError, match="domain 2 may not") as e:
        host.send(2, 1, p1)
    assert errno_of(e) == errno.EPERM
    with pytest.raises(ChannelError, match="no such domain") as e:
        host.send(0, 9, 1)
    assert errno_of(e) == errno.ESRCH
    with pytest.raises(ChannelError, match="out of range"):
        host.status(0, 1, 5000)


def test_masked_event_waits_for_unmask(host):
    p0, p1 = connect(host)
    host.consume(0, 0, timeout=0)
    host.mask(0, 0, p0)
    assert host.send(1, 1, p1).outcome == "pending, masked"
    assert host.consume(0, 0, timeout=0) == []
    host.unmask(0, 0, p0)
    assert host.consume(0, 0, timeout=0) == [p0]


def test_priorities_and_vcpu_binding(host):
    a = host.bind_ipi(0, 0, vcpu=0)
    b = host.bind_ipi(0, 0, vcpu=0)
    host.set_priority(0, 0, b, 2)
    host.send(0, 0, a)
    host.send(0, 0, b)
    assert host.consume(0, 0, timeout=0) == [b, a]
    with pytest.raises(ChannelError, match="cannot move"):
        host.bind_vcpu(0, 0, a, 1)
    p1 = host.alloc_unbound(1, 1, 0)
    host.bind_vcpu(1, 1, p1, 1)
    p0 = host.bind_interdomain(0, 0, 1, p1)
    host.consume(0, 0, timeout=0)
    host.send(0, 0, p0)
    assert host.consume(1, 0, timeout=0) == []
    assert host.consume(1, 1, timeout=0) == [p1]
    with pytest.raises(ChannelError, match="priority 16"):
        host.set_priority(0, 0, a, 16)


def test_virq_rules(host):
    p = host.bind_virq(0, 0, 0, vcpu=1)  # VIRQ_TIMER is per vCPU
    with pytest.raises(ChannelError, match="already bound") as e:
        host.bind_virq(0, 0, 0, vcpu=1)
    assert errno_of(e) == errno.EEXIST
    with pytest.raises(ChannelError, match="global"):
        host.bind_virq(0, 0, 2, vcpu=1)
    host.raise_virq(0, 0, vcpu=1)
    assert host.consume(0, 1, timeout=0) == [p]


def test_array_grows_a_page_at_a_time_and_ports_run_out(tmp_path):
    create_host(str(tmp_path), nr_domains=2, nr_vcpus=1, max_ports_domu=2048)
    with SimHost(str(tmp_path)) as h:
        mem = h.domain(1, "t").mem
        ports = [h.bind_ipi(1, 1) for _ in range(1100)]
        assert ports[-1] == 1100 and mem.nr_pages == 2
        for _ in range(2047 - 1100):
            h.bind_ipi(1, 1)
        with pytest.raises(ChannelError, match="no free port") as e:
            h.bind_ipi(1, 1)
        assert errno_of(e) == errno.ENOSPC


def test_linked_port_is_not_reused_until_unlinked(host):
    a = host.bind_ipi(0, 0)
    host.send(0, 0, a)  # linked, not yet consumed
    host.close_port(0, 0, a)
    b = host.bind_ipi(0, 0)
    assert b != a, "a still-LINKED port must not be reused (Xen's evtchn_is_busy)"


def test_lowest_free_port_is_chosen_across_processes(tmp_path):
    """get_free_port() picks the lowest free port even when another opener freed it (the cached hint is revalidated)."""
    create_host(str(tmp_path), nr_domains=2, nr_vcpus=1, max_ports_domu=4096)
    with SimHost(str(tmp_path)) as a, SimHost(str(tmp_path)) as b:
        ports = [a.bind_ipi(1, 1) for _ in range(3000)]
        assert ports == list(range(1, 3001))
        b.close_port(1, 1, 1500)  # another process frees a port below a's hint
        b.close_port(1, 1, 7)
        assert a.bind_ipi(1, 1) == 7
        assert a.bind_ipi(1, 1) == 1500
        assert b.bind_ipi(1, 1) == 3001
        assert a.bind_ipi(1, 1) == 3002
        a.send(1, 1, 20)  # linked, not consumed: skipped while LINKED, taken once the guest consumed it
        a.close_port(1, 1, 20)
        assert b.bind_ipi(1, 1) == 3003
        assert a.consume(1, 0, timeout=0) == []  # closed (masked) port: consumed, not delivered
        assert b.bind_ipi(1, 1) == 20


def test_state_file_errors_leave_the_file_unchanged(tmp_path):
    with pytest.raises(StateError, match="run `xenevt sim init`"):
        SimHost(str(tmp_path / "nowhere"))
    create_host(str(tmp_path))
    path = tmp_path / FILE_NAME
    with pytest.raises(StateError, match="already exists"):
        create_host(str(tmp_path))
    data = bytearray(path.read_bytes())
    data[0:8] = b"NOTXENEV"
    path.write_bytes(data)
    digest = hashlib.sha256(data).digest()
    with pytest.raises(StateError, match="bad magic"):
        SimHost(str(tmp_path))
    assert hashlib.sha256(path.read_bytes()).digest() == digest
    path.write_bytes(os.urandom(100))
    with pytest.raises(StateError, match="truncated"):
        SimHost(str(tmp_path))


def _notifier(state, ports, rounds, barrier, results, fresh_outcome="queued"):
    """Notify every port ``rounds`` times; report per port how many notifies set PENDING afresh."""
    fresh = dict.fromkeys(ports, 0)
    with SimHost(state) as h:
        barrier.wait()
        for _ in range(rounds):
            for port in ports:
                if h.send(1, 1, port).outcome == fresh_outcome:
                    fresh[port] += 1
    results.put(fresh)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["fifo", "2l"])
def test_many_processes_notify_while_one_consumes(tmp_path, kernel):
    """Four processes notify the same 8 ports concurrently while one consumes (dom0's kernel on FIFO, or on
    2-level: the upcall scan races Xen's selector and upcall stores instead of the queue links).

    Each notify that finds PENDING clear starts one pending set; the consumer
    must deliver each set exactly once (none lost, none twice), and a notify
    that finds PENDING set coalesces into the delivery still to come.
    """
    from collections import Counter

    state = str(tmp_path)
    create_host(state, nr_domains=2, nr_vcpus=1, abis={0: kernel})
    with SimHost(state) as h:
        pairs = [connect(h) for _ in range(8)]
        h.claim_vcpu(0, 0)
        h.consume(0, 0, timeout=0)
        remote = {p1: p0 for p0, p1 in pairs}
        ctx = mp.get_context("fork")
        barrier = ctx.Barrier(5)
        results = ctx.Queue()
        fresh_outcome = "queued" if kernel == "fifo" else "raised"
        procs = [ctx.Process(target=_notifier, args=(state, list(remote), 150, barrier, results, fresh_outcome))
                 for _ in range(4)]
        for p in procs:
            p.start()
        barrier.wait()
        got: list[int] = []
        while any(p.is_alive() for p in procs):
            got += h.consume(0, 0, timeout=0.05)
        fresh = Counter()
        for _ in procs:
            fresh.update({remote[p1]: n for p1, n in results.get(timeout=10).items()})
        for p in procs:
            p.join()
            assert p.exitcode == 0
        got += h.consume(0, 0, timeout=0.2)
        delivered = Counter(got)
        assert set(delivered) == set(remote.values())
        assert delivered == fresh, "each pending set delivered exactly once"
        mem = h.domain(0, "t").mem
        if kernel == "2l":  # afterwards: nothing pending, no selector bit, no upcall
            assert not any(mem.l2_pending()) and mem.vcpu_info(0) == (0, 0, 0)
            return
        # afterwards: every port idle and unlinked, every queue empty, READY clear
        for p0 in remote.values():
            assert mem.word(p0) & (abi.WORD_PENDING | abi.WORD_LINKED | abi.WORD_BUSY) == 0
        results_, chain = h.domain(0, "t").engine.walk()
        assert chain == [] and mem.control_block(0)[0] == 0
        from xenevt.dump import build_dump

        view = build_dump(mem, 0, "sim")
        assert view.vcpus[0].queues == [] and not any(w.pending or w.linked or w.busy for w in view.words)


def test_demo_runs_and_shows_priority_order():
    import io

    from xenevt.sim import demo

    buf = io.StringIO()
    assert demo.run(buf) == 0
    text = buf.getvalue()
    assert "delivered [2, 1]: priority 2 first" in text
    assert "0xc0000000  PM--" in text and "unbound again" in text


def test_a_host_made_again_with_force_starts_with_an_empty_xenstore(tmp_path):
    """sim init --force replaces the host and its xenstore with it: the old host's device nodes would name ports
    the new one never bound (its devices added again collided with them: "domain 1 has a console already")."""
    from xenevt.cli import main

    st = ["--state", str(tmp_path)]
    assert main([*st, "sim", "init"]) == 0
    assert main([*st, "sim", "device", "add", "console", "1"]) == 0
    assert (tmp_path / "xenstore.json").exists()
    assert main([*st, "sim", "init", "--force", "--yes"]) == 0
    assert not (tmp_path / "xenstore.json").exists()
    assert main([*st, "sim", "device", "add", "console", "1"]) == 0
