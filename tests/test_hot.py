"""The simulator's hot path in C (csrc/simhost.c, xenevt/sim/hot.py) against the Python hypercalls it stands in for,
and the host lock kept in the state file.

The reference is the same host with ``XENEVT_SIM_HOT=python`` (every call the Python way): random operations are
made on both, and after each one their answers and every byte of their files (but the header's creation time) must
be the same.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import threading
import time

import pytest

from xenevt import abi
from xenevt.errors import XenevtError
from xenevt.sim.host import FILE_NAME, SimHost, create_host
from xenevt.sim.statefile import HEADER, INTENT, RAISE, RAISE_MARK
from xenevt.sim.stats import STATS_NAME

DOMS, VCPUS = 3, 2


def _file(state: str) -> bytes:
    with open(os.path.join(state, FILE_NAME), "rb") as f:
        data = bytearray(f.read())
    struct.pack_into("<Q", data, HEADER.size - 8, 0)  # the creation time
    return bytes(data)


def _stats(state: str) -> bytes:
    path = os.path.join(state, STATS_NAME)
    if not os.path.exists(path):
        return b""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    struct.pack_into("<Q", data, 20, 0)  # (the host's creation time, copied into the counters' header)
    return bytes(data)


def _answer(fn, *args):
    try:
        return fn(*args)
    except XenevtError as e:
        return f"{type(e).__name__}: {e}"


def _step(h, name, d, port, v, r, n, flag, who):
    """One random operation on host ``h`` (the same draws for both hosts)."""
    if name == "bind":
        return h.bind_interdomain(d, d, r, h.alloc_unbound(r, r, d))
    if name == "ipi":
        return h.bind_ipi(d, d, v)
    if name == "close":
        return h.close_port(d, d, port)
    if name == "send":
        return h.send(who, d, port, tell_unbound=flag)
    if name == "mask":
        return h.mask(d, d, port)
    if name == "unmask":
        return h.unmask(d, d, port)
    if name == "priority":
        return h.set_priority(d, d, port, n % 16)
    if name == "vcpu":
        return h.bind_vcpu(d, d, port, v)
    return h.consume(d, v, n, timeout=0, caller=d)


@pytest.mark.parametrize("abis", [("fifo", "fifo", "fifo"), ("fifo", "2l", "fifo"), ("2l", "2l", "fifo")],
                         ids=["fifo", "mixed", "2l"])
def test_c_send_consume_unmask_match_the_python_hypercalls(tmp_path, monkeypatch, abis):
    """500 random steps each on two copies of a host: the C hot path's answers and bytes are the reference's."""
    c_state, py_state = str(tmp_path / "c"), str(tmp_path / "py")
    for state in (c_state, py_state):
        create_host(state, nr_domains=DOMS, nr_vcpus=VCPUS, max_ports_dom0=96, max_ports_domu=80,
                    abis=dict(enumerate(abis)))
    c = SimHost(c_state)
    monkeypatch.setenv("XENEVT_SIM_HOT", "python")
    py = SimHost(py_state)
    monkeypatch.delenv("XENEVT_SIM_HOT")
    assert c._hot_host() is not None and py._hot_host() is None
    for h in (c, py):
        for d in range(DOMS):
            for v in range(VCPUS):
                h.claim_vcpu(d, v)
    rng = random.Random(15)
    used: dict[str, int] = {}
    try:
        for step in range(500):
            d = rng.randrange(DOMS)
            ports = [st.port for st in py.list_ports(d, d)]
            port = rng.choice(ports + [0, 79, 95, 200]) if ports else rng.randrange(100)
            v, r, n, flag = rng.randrange(VCPUS), rng.randrange(DOMS), rng.choice([1, 3, 256]), rng.random() < 0.5
            op = rng.random()
            name = ("bind" if op < 0.15 else "ipi" if op < 0.2 else "close" if op < 0.27 else "send" if op < 0.6
                    else "mask" if op < 0.7 else "unmask" if op < 0.8 else "priority" if op < 0.83
                    else "vcpu" if op < 0.86 else "consume")
            who = d if rng.random() < 0.9 else (d + 1) % DOMS
            used[name] = used.get(name, 0) + 1
            call = (name, lambda h, name=name, d=d, p=port, v=v, r=r, n=n, flag=flag, who=who:
                    _step(h, name, d, p, v, r, n, flag, who))
            got, want = _answer(call[1], c), _answer(call[1], py)
            assert got == want, f"step {step}: {call[0]} on domain {d} port {port}"
            assert _file(c_state) == _file(py_state), f"step {step}: {call[0]} on domain {d} port {port}"
        assert _stats(c_state) == _stats(py_state)
        assert min(used[k] for k in ("send", "consume", "unmask")) > 20
    finally:
        c.close()
        py.close()


def test_a_holder_killed_with_the_lock_is_seen_and_its_raise_finished(tmp_path):
    """A process SIGKILLed while holding the host lock, a raise under way: the next taker gets the lock (the robust
    mutex says its holder died) and finishes the raise the journal marks."""
    state = str(tmp_path)
    create_host(state, nr_domains=2, nr_vcpus=1)
    with SimHost(state) as h:
        p1 = h.alloc_unbound(1, 1, 0)
        p0 = h.bind_interdomain(0, 0, 1, p1)
        h.claim_vcpu(0, 0)
        assert h.consume(0, 0) == [p0]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - dies holding the lock, its raise marked but not done
        try:
            h = SimHost(state)
            with h.locked():
                RAISE_MARK.pack_into(h._mm, h._journal + RAISE, 0 + 1, p0)
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    with SimHost(state) as h:
        assert "took the host lock from a holder that died holding it" in h.recovered
        assert f"finished a raise of port {p0} of domain 0" in h.recovered
        assert h._jw[RAISE // 4] == 0 and h._jw[INTENT // 4] == 0
        h.claim_vcpu(0, 0)
        assert h.consume(0, 0) == [p0]  # (at least once: the raise redone)
        assert h.send(1, 1, p1).outcome == "queued"  # and the lock works on


def test_the_c_send_waits_for_a_python_holder_of_the_lock(tmp_path):
    """One lock for every writer: a C send from another thread (another open of the host) waits while a Python
    update holds it."""
    state = str(tmp_path)
    create_host(state, nr_domains=2, nr_vcpus=1)
    a, b = SimHost(state), SimHost(state)
    try:
        p1 = a.alloc_unbound(1, 1, 0)
        a.bind_interdomain(0, 0, 1, p1)
        done = []
        with a.locked():
            t = threading.Thread(target=lambda: done.append(b.send(1, 1, p1)))
            t.start()
            time.sleep(0.2)
            assert not done  # held back by the lock
        t.join(5)
        assert done and done[0].outcome in ("queued", "coalesced")
    finally:
        a.close()
        b.close()


def test_a_file_made_before_the_lock_gets_one(tmp_path):
    """A state file whose lock slot is zero (made before the lock lived in it) is formatted once, on open."""
    from xenevt._native import lib

    state = str(tmp_path)
    create_host(state, nr_domains=1, nr_vcpus=1)
    path = os.path.join(state, FILE_NAME)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size - abi.PAGE_SIZE)
        f.write(bytes(64))
    with SimHost(state) as h:
        assert lib.xe_lock_ready(h._hostlock.slot)
        h.bind_ipi(0, 0)
    before = _file(state)
    with SimHost(state, read_only=True) as h:  # a reader takes the lock too, and leaves the file as it was
        h.list_ports(0, 0)
    assert _file(state) == before
