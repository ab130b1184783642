"""The simulator's hot path in C (csrc/simhost.c, xenevt/sim/hot.py) against the Python hypercalls it stands in for,
and the host lock kept in the state file.

The reference is the same host with ``XENEVT_SIM_HOT=python`` (every call the Python way): random operations are
made on both, and after each one their answers and every byte of their files (but the header's creation time) must
be the same.  EVTCHNOP_status is also held to its Python reference on the same host at the same moment, for every
port of the domain a step touched (and the ports around the table's ends).
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
from xenevt.sim import hot
from xenevt.sim.binds import Binds
from xenevt.sim.host import FILE_NAME, SimHost, create_host
from xenevt.sim.statefile import HEADER, HOST_ID_FIELD, INTENT, RAISE, RAISE_MARK
from xenevt.sim.stats import STATS_NAME

DOMS, VCPUS = 3, 2


def _file(state: str) -> bytes:
    with open(os.path.join(state, FILE_NAME), "rb") as f:
        data = bytearray(f.read())
    struct.pack_into("<Q", data, HEADER.size - 8, 0)  # the creation time
    struct.pack_into("<Q", data, HOST_ID_FIELD, 0)  # the host's identity (random)
    return bytes(data)


def _stats(state: str) -> bytes:
    path = os.path.join(state, STATS_NAME)
    if not os.path.exists(path):
        return b""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    struct.pack_into("<QQ", data, 20, 0, 0)  # (the host's creation time and identity, copied into the counters' header)
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
    if name == "status":
        return h.status(who, d if flag else abi.DOMID_SELF, port)
    if name == "xen":
        return h.xen_port(d, r, v)
    if name == "virq":
        return h.bind_virq(d, d, port % abi.NR_VIRQS, v)
    return h.consume(d, v, n, timeout=0, caller=d)


def _statuses(h, d: int) -> list[tuple[int, int, str]]:
    """Every port of domain ``d`` (and a few past the table) asked by each domain: ``(caller, port, answer)`` of
    the host's status, which must be its Python reference's."""
    out = []
    for port in [*range(h.domains[d].mem.nr_chans + 2), 1 << 17]:
        for caller in range(DOMS):
            got = _answer(h.status, caller, d, port)
            want = _answer(h.reader.status_reference, caller, d, port)
            assert got == want, f"status of port {port} of {d} by {caller}"
            out.append((caller, port, got))
    return out


def _pair(tmp_path, monkeypatch, abis, xen="4.20", dom0=96, domu=80):
    """Two copies of one new host: the first with the C hot path, the second the Python reference."""
    c_state, py_state = str(tmp_path / "c"), str(tmp_path / "py")
    for state in (c_state, py_state):
        create_host(state, nr_domains=DOMS, nr_vcpus=VCPUS, max_ports_dom0=dom0, max_ports_domu=domu,
                    abis=dict(enumerate(abis)), xen=xen)
    c = SimHost(c_state)
    monkeypatch.setenv("XENEVT_SIM_HOT", "python")
    py = SimHost(py_state)
    monkeypatch.delenv("XENEVT_SIM_HOT")
    assert c.hot.get() is not None and py.hot.get() is None
    return c_state, py_state, c, py


@pytest.mark.parametrize("abis,xen", [(("fifo", "fifo", "fifo"), "4.20"), (("fifo", "2l", "fifo"), "4.20"),
                                      (("2l", "2l", "fifo"), "4.20"), (("fifo", "2l", "fifo"), "4.17")],
                         ids=["fifo", "mixed", "2l", "mixed-4.17"])
def test_c_send_consume_unmask_match_the_python_hypercalls(tmp_path, monkeypatch, abis, xen):
    """500 random steps each on two copies of a host: the C hot path's answers and bytes are the reference's (Xen
    4.17 refuses the status of a port Xen consumes: EACCES, said by the Python path)."""
    c_state, py_state, c, py = _pair(tmp_path, monkeypatch, abis, xen)
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
            name = ("bind" if op < 0.15 else "ipi" if op < 0.2 else "close" if op < 0.27 else "send" if op < 0.55
                    else "mask" if op < 0.63 else "unmask" if op < 0.72 else "priority" if op < 0.75
                    else "vcpu" if op < 0.78 else "status" if op < 0.86 else "xen" if op < 0.87
                    else "virq" if op < 0.88 else "consume")
            if name == "status" and rng.random() < 0.3:
                port = rng.choice([0, 1, 63, 64, 65, 79, 80, 95, 96, abi.DOMID_FIRST_RESERVED])
            who = d if rng.random() < 0.9 else (d + 1) % DOMS
            used[name] = used.get(name, 0) + 1
            call = (name, lambda h, name=name, d=d, p=port, v=v, r=r, n=n, flag=flag, who=who:
                    _step(h, name, d, p, v, r, n, flag, who))
            got, want = _answer(call[1], c), _answer(call[1], py)
            assert got == want, f"step {step}: {call[0]} on domain {d} port {port}"
            assert _file(c_state) == _file(py_state), f"step {step}: {call[0]} on domain {d} port {port}"
            if step % 10 == 0 or name in ("status", "xen", "close"):
                assert _statuses(c, d) == _statuses(py, d), f"step {step}: {call[0]} on domain {d} port {port}"
        assert _stats(c_state) == _stats(py_state)
        assert min(used[k] for k in ("send", "consume", "unmask", "status")) > 20
        # the common case was C's own answer, not the Python path's (Xen's ports are the Python path's)
        raw, out = c.hot.get().status_buffer()
        plain = [(d, st.port) for d in range(DOMS) for st in c.list_ports(d, d) if not st.xen_owned]
        assert plain and all(hot.status(c.hot.h, d, d, p, out) == 0 for d, p in plain)
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
                RAISE_MARK.pack_into(h.file.mm, h.file.journal + RAISE, 0 + 1, p0)
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    with SimHost(state) as h:
        assert "took the host lock from a holder that died holding it" in h.recovered
        assert f"finished a raise of port {p0} of domain 0" in h.recovered
        assert h.file.jw[RAISE // 4] == 0 and h.file.jw[INTENT // 4] == 0
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
        assert lib.xe_lock_ready(h.file.hostlock.slot)
        h.bind_ipi(0, 0)
    before = _file(state)
    with SimHost(state, read_only=True) as h:  # a reader takes the lock too, and leaves the file as it was
        h.list_ports(0, 0)
    assert _file(state) == before


def _fill(c, py, rng, d: int, bound: list[int], ops: int, binds: float) -> tuple[bool, int]:
    """``ops`` steps on domain ``d`` of both hosts, answers compared: IPIs bound (``binds`` of the steps; a port
    each, the lowest free one; with ``binds`` 1, until the table is full), sends on some (their events stay
    queued: LINKED), closes of others.  Returns whether the table was found full (ENOSPC), and how many binds
    passed over a lower free port still LINKED."""
    full, skips = False, 0
    for _ in range(ops):
        op = rng.random()
        if op < binds or not bound:
            v = rng.randrange(VCPUS)
            got, want = _answer(c.bind_ipi, d, d, v), _answer(py.bind_ipi, d, d, v)
            assert got == want
            if isinstance(got, int):
                bound.append(got)
                skips += c.domains[d].free_hint < got  # (the hint: the lowest free port)
                continue
            assert "ENOSPC" in got
            full = True
            if binds == 1:
                break
        elif op < binds + (1 - binds) / 2:
            port = bound[rng.randrange(len(bound))]
            assert _answer(c.send, d, d, port) == _answer(py.send, d, d, port)
        else:
            port = bound.pop(rng.randrange(len(bound)))
            assert _answer(c.close_port, d, d, port) == _answer(py.close_port, d, d, port)
    return full, skips


@pytest.mark.parametrize("abis,domu", [(("fifo", "fifo", "fifo"), 300), (("fifo", "2l", "fifo"), 4200)],
                         ids=["fifo", "2l-past-4096"])
def test_c_free_port_choice_matches_the_reference(tmp_path, monkeypatch, abis, domu):
    """The binds' free-port search in C picks the reference's port: tables filled to ENOSPC (on 2-level, its
    4096 ports of a 4200-port table), ports freed (some with their event still queued: LINKED, which Xen skips)
    and reused, consumed (no longer busy), and two opens of one host each with its own lowest-free hint."""
    c_state, py_state, c, py = _pair(tmp_path, monkeypatch, abis, dom0=96, domu=domu)
    c2 = SimHost(c_state)
    monkeypatch.setenv("XENEVT_SIM_HOT", "python")
    py2 = SimHost(py_state)
    monkeypatch.delenv("XENEVT_SIM_HOT")
    for h in (c, py):
        for v in range(VCPUS):
            h.claim_vcpu(1, v)
    rng = random.Random(1515)
    bound: list[int] = []
    limit = min(domu, abi.EVTCHN_2L_NR_CHANNELS) if abis[1] == "2l" else domu
    try:
        assert _fill(c, py, rng, 1, bound, limit + 1, binds=1)[0] and sorted(bound) == list(range(1, limit))
        fulls = skips = 0
        for round_ in range(8):
            a, b = (c, py) if round_ % 2 == 0 else (c2, py2)  # the other open's hint is stale: frees moved
            full, skipped = _fill(a, b, rng, 1, bound, 200, binds=0.4 if round_ % 4 < 2 else 0.8)
            fulls, skips = fulls + full, skips + skipped
            assert _file(c_state) == _file(py_state), f"round {round_}"
            if round_ % 3 == 2:
                for v in range(VCPUS):
                    assert c.consume(1, v, 4096, timeout=0, caller=1) == py.consume(1, v, 4096, timeout=0, caller=1)
        assert fulls >= 2  # full again, after frees and reuse
        assert skips > 0 if abis[1] == "fifo" else skips == 0  # (2-level ports have no LINKED bit)
    finally:
        for h in (c, c2, py, py2):
            h.close()


def test_c_scan_and_status_on_hostile_tables(tmp_path):
    """Channel tables, event words and array sizes no Xen could hold: the C scan picks the reference scan's port
    and hint, or leaves the call to it (a header Python's reads refuse); status answers as its reference does."""
    state = str(tmp_path)
    create_host(state, nr_domains=DOMS, nr_vcpus=VCPUS, max_ports_dom0=2100, max_ports_domu=300)
    rng = random.Random(7)
    with SimHost(state) as h:
        for _ in range(20):
            h.bind_interdomain(0, 0, 1, h.alloc_unbound(1, 1, 0))
        assert h.hot.get() is not None
        dom, mem = h.domains[0], h.domains[0].mem
        chans, first = mem.geometry.chans_offset, h.hot.get().first_free
        seen = set()
        for trial in range(300):
            for _ in range(rng.choice([1, 10, 200])):
                port = rng.randrange(mem.nr_chans)
                mem.buffer[chans + port * 16 + rng.randrange(16)] = rng.choice([0, 0, 1, 2, 3, 6, 7, 0xFF])
                if rng.random() < 0.3 and port < mem.nr_ports:
                    mem.set_word(port, rng.choice([abi.WORD_LINKED, abi.WORD_PENDING | abi.WORD_LINKED, 0,
                                                   abi.WORD_MASKED, 0xFFFFFFFF]))
            header = struct.unpack_from("<I", mem.buffer, 16)[0]
            if trial % 10 == 0:  # an array larger than its capacity, then back
                struct.pack_into("<I", mem.buffer, 16, rng.choice([mem.max_pages + 1, 0xFFFFFFFF, 0, 1]))
            start = rng.choice([0, 1, 2, rng.randrange(mem.nr_chans + 1)])
            nr = rng.choice([mem.nr_chans, mem.nr_chans + 1, rng.randrange(1, mem.nr_chans + 1)])
            port = hot.free_port(h.hot.h, 0, start, nr, first)
            if 1 <= start <= nr <= mem.nr_chans:
                try:
                    want = Binds.free_port_scan(dom, start, nr)
                except XenevtError:  # (the header's page count, named by the Python read)
                    want = None
                assert (port, first[0]) == want if port >= 0 else want is None, f"trial {trial}"
                seen.add("slow" if port < 0 else "port" if port else "none")
            else:
                assert port == hot.SLOW
            for p in [0, 1, *rng.sample(range(mem.nr_chans), 20), mem.nr_chans]:
                for caller in range(DOMS):
                    assert _answer(h.status, caller, 0, p) == _answer(h.reader.status_reference, caller, 0, p)
            struct.pack_into("<I", mem.buffer, 16, header)
        assert hot.free_port(h.hot.h, 9, 1, 10, first) == hot.SLOW  # no such domain
        assert seen == {"slow", "port", "none"}
