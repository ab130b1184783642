"""Crash safety of the simulator: an update cut short at any step is finished whole by the next open or lock
holder, and ``sim check`` finds (and ``--repair`` mends) every inconsistency a state file can hold."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from xenevt import abi
from xenevt.abi import ECS_UNBOUND
from xenevt.cli import main
from xenevt.engine.layout import CHAN
from xenevt.sim.check import check_host
from xenevt.sim.host import FILE_NAME, SimHost, create_host
from xenevt.sim.statefile import INTENT, INTENT_COMMITTED, RAISE


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing after it runs, no handler clears the intent record."""


@pytest.fixture
def state(tmp_path):
    d = str(tmp_path / "host")
    create_host(d, nr_domains=3, nr_vcpus=2, max_ports_dom0=64, max_ports_domu=64)
    return d


def digest(state: str) -> str:
    with open(os.path.join(state, FILE_NAME), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tables(state: str) -> dict:
    """Every open port's status and event word: what a whole update must leave."""
    with SimHost(state, read_only=True, recover=False) as h:
        return {d: [(st.port, st.state, st.remote_domain, st.remote_port, st.vcpu, st.priority, st.word)
                    for st in h.list_ports(0, d)] for d in sorted(h.domains)}


def cut(h: SimHost, after: int, torn: bool = False) -> None:
    """Make the next update stop after ``after`` of its steps (``torn``: the next channel record half written)."""
    original = h.effects.apply

    def apply(entries):
        original(entries[:after])
        if torn and after < len(entries) and entries[after][0] == 1:
            kind, domid, port, value = entries[after]
            mem = h.domains[domid].mem
            at = mem.geometry.chans_offset + port * CHAN.size
            mem.buffer[at: at + 5] = value[:5]  # state and priority... but not the remote end
        raise Killed

    h.effects.apply = apply


def _setup(h):
    rp = h.alloc_unbound(1, 1, 0)
    p0 = h.bind_interdomain(0, 0, 1, rp)
    h.claim_vcpu(0, 0)
    h.consume(0, 0, timeout=0)
    h.bind_ipi(2, 2)
    return p0, rp


OPS = {
    "bind_interdomain": lambda h, p0, rp: h.bind_interdomain(2, 2, 1, h.alloc_unbound(1, 1, 2)),
    "close": lambda h, p0, rp: h.close_port(0, 0, p0),
    "close remote end": lambda h, p0, rp: h.close_port(1, 1, rp),
    "reset": lambda h, p0, rp: h.reset(1, 1),  # (a domain resets itself: Xen refuses another running one)
    "alloc_unbound": lambda h, p0, rp: h.alloc_unbound(2, 2, 0),
    "bind_ipi": lambda h, p0, rp: h.bind_ipi(2, 2, 1),
}


@pytest.mark.parametrize("torn", [False, True], ids=["whole-records", "torn-record"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_update_cut_at_every_step_is_finished_whole_by_the_next_open(tmp_path, op, torn):
    whole = str(tmp_path / "whole")
    create_host(whole, nr_domains=3, nr_vcpus=2, max_ports_dom0=64, max_ports_domu=64)
    with SimHost(whole) as h:
        args = _setup(h)
        OPS[op](h, *args)
    expected = tables(whole)
    for after in range(8):
        state = str(tmp_path / f"cut{after}")
        create_host(state, nr_domains=3, nr_vcpus=2, max_ports_dom0=64, max_ports_domu=64)
        with SimHost(state) as h:
            args = _setup(h)
            if op == "bind_interdomain":
                h.alloc_unbound(1, 1, 2)  # (the remote end, made before the cut)
                rp = max(st.port for st in h.list_ports(1, 1))
                cut(h, after, torn)
                with pytest.raises(Killed):
                    h.bind_interdomain(2, 2, 1, rp)
            else:
                cut(h, after, torn)
                with pytest.raises(Killed):
                    OPS[op](h, *args)
        left, _, _ = check_host(state)
        assert any(line.startswith("journal: intent:") for line in left), (after, left)
        with SimHost(state) as h:
            assert h.recovered and h.recovered[0].startswith("redid"), h.recovered
        assert check_host(state)[0] == [], after
        assert tables(state) == expected, f"{op} cut after step {after}"


def test_the_next_lock_holder_in_another_live_process_finishes_it(state):
    with SimHost(state) as a, SimHost(state) as b:
        rp = a.alloc_unbound(1, 1, 0)
        cut(a, 1)
        with pytest.raises(Killed):
            a.bind_interdomain(0, 0, 1, rp)
        assert b.status(0, 1, rp).state == "unbound"  # status takes no lock: the record as the cut left it
        b.send(1, 1, rp, tell_unbound=False)  # the lock: b redoes the bind first, so this send reaches dom0
        assert b.recovered == [f"redid bind_interdomain by domain 0 (pid {os.getpid()}): 4 step(s)"]
        assert b.status(0, 1, rp).state == "interdomain"
    assert check_host(state)[0] == []


def test_read_only_open_shows_the_update_whole_and_leaves_the_file(state):
    with SimHost(state) as h:
        rp = h.alloc_unbound(1, 1, 0)
        cut(h, 1)
        with pytest.raises(Killed):
            h.bind_interdomain(0, 0, 1, rp)
    before = digest(state)
    with SimHost(state, read_only=True) as h:
        assert h.status(0, 1, rp).state == "interdomain"
    assert digest(state) == before


def test_a_real_sigkill_inside_a_bind(state):
    """A process sleeping inside the update (XENEVT_SIM_CRASH_SLEEP) is SIGKILLed once its intent is committed."""
    with SimHost(state) as h:
        rp = h.alloc_unbound(1, 1, 0)
        journal = h.file.journal
    code = ("import sys; from xenevt.sim.host import SimHost; "
            f"SimHost({state!r}).bind_interdomain(0, 0, 1, {rp}); print('done')")
    env = dict(os.environ, XENEVT_SIM_CRASH_SLEEP="2")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
    path = os.path.join(state, FILE_NAME)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            f.seek(journal + INTENT)
            if struct.unpack("<I", f.read(4))[0] == INTENT_COMMITTED:
                break
        time.sleep(0.005)
    else:
        pytest.fail("the bind never committed its intent")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert check_host(state)[0][0].startswith("journal: intent: bind_interdomain by domain 0")
    with SimHost(state) as h:
        assert h.recovered[0].startswith("redid bind_interdomain")
        p0 = h.status(0, 1, rp).remote_port
        assert h.status(0, 0, p0).remote_port == rp
    assert check_host(state)[0] == []


def test_raise_cut_short_leaves_a_lost_link_that_the_next_lock_holder_mends(state):
    """Killed inside the engine's link: LINKED set, not yet on the tail's LINK.  The raise mark names the port."""
    with SimHost(state) as h:
        a, b = h.bind_ipi(0, 0), h.bind_ipi(0, 0)
        h.send(0, 0, a)
        mem = h.domains[0].mem
        mem.update_chan(b, last_priority=7)  # the engine records the queue before linking
        mem.set_word(b, mem.word(b) | abi.WORD_PENDING | abi.WORD_LINKED)  # linked, but a's LINK is still 0
        h.file.jw[RAISE // 4 + 1] = b
        h.file.jw[RAISE // 4] = 1
    left = check_host(state)[0]
    assert "journal: raise: a raise of port 2 of domain 0 was cut short" in left
    assert "domain 0 vCPU 0 queue 7: word[2]: port 2 is LINKED but no head reaches it (its event is lost)" in left
    with SimHost(state) as h:
        assert h.recovered == ["finished a raise of port 2 of domain 0"]
        assert h.consume(0, 0, timeout=0) == [a, b]
    assert check_host(state)[0] == []


def test_consumer_killed_mid_batch_is_taken_over(state):
    """A consumer killed after taking READY (xchg) and before keeping it locally: the events are stuck until
    the next consumer (or open) sees the dead pid and announces the queue again."""
    with SimHost(state) as h:
        ports = [h.bind_ipi(0, 0) for _ in range(3)]
        for p in ports:
            h.send(0, 0, p)
        mem = h.domains[0].mem
        mem.control_block(0)[0] = 0  # READY taken...
        mem.set_consumer(0, 999999)  # ...by a consumer that is gone
    assert check_host(state)[0] == [
        "domain 0 vCPU 0: consumer: names pid 999999, which holds no consumer lock (a consumer that is gone)",
        "domain 0 vCPU 0 queue 7: ready: 3 event(s) from port 1 on, but no READY bit (shared or the guest's "
        "local) announces them"]
    with SimHost(state) as h:
        assert h.recovered == ["cleared vCPU 0 of domain 0: its consumer (pid 999999) is gone"]
        h.claim_vcpu(0, 0)
        assert h.consume(0, 0, timeout=0) == ports


# --- sim check: each kind of inconsistency, built by writing the file directly ----------------------------------
def _write_chan(h, domid, port, **fields):
    h.domains[domid].mem.update_chan(port, **fields)


def _peers(h):
    rp = h.alloc_unbound(1, 1, 0)
    h.bind_interdomain(0, 0, 1, rp)
    _write_chan(h, 1, rp, state=ECS_UNBOUND, remote_port=0)  # dom1's end unbound, dom0's still connected


def _peer_elsewhere(h):
    rp = h.alloc_unbound(1, 1, 0)
    h.bind_interdomain(0, 0, 1, rp)
    _write_chan(h, 1, rp, remote_port=7)


def _pending_closed(h):
    p = h.bind_ipi(0, 0)
    h.close_port(0, 0, p)
    mem = h.domains[0].mem
    mem.set_word(p, mem.word(p) | abi.WORD_PENDING)


def _stale_closed_record(h):
    p = h.bind_ipi(0, 0)
    h.close_port(0, 0, p)
    _write_chan(h, 0, p, remote_dom=2, aux=5)


def _no_word(h):
    _write_chan(h, 0, 1500, state=5, aux=1)  # a bound VIRQ past the array's one page


def _local_head(h):
    p = h.bind_ipi(0, 0)
    h.send(0, 0, p)
    h.claim_vcpu(0, 0)
    h.consume(0, 0, timeout=0)
    h.domains[0].mem.guest(0)[1 + 7] = p  # a local head naming a consumed word


def _ready_empty(h):
    h.domains[0].mem.control_block(0)[0] = 1 << 3


def _tail(h):
    a, b = h.bind_ipi(0, 0), h.bind_ipi(0, 0)
    h.send(0, 0, a)
    h.send(0, 0, b)
    with h.domains[0].mem.tails() as t:
        t[7] = a  # Xen's tail left behind the chain's end


def _link_out(h):
    a, b = h.bind_ipi(0, 0), h.bind_ipi(0, 0)
    h.send(0, 0, a)
    mem = h.domains[0].mem
    mem.set_word(a, mem.word(a) | b)  # a LINK to a word that is not linked


def _intent(h):
    h.file.jw[INTENT // 4] = 0  # (a well-formed record is written by cutting an update short)
    cut(h, 0)
    try:
        h.bind_ipi(0, 0)
    except Killed:
        pass


CHECK_CASES = {
    "peers disagree": (_peers, ["d0:1: remote_port: names port 1 of domain 1, which is unbound (waiting "
                                "for domain 0): the peers disagree"]),
    "peer connected elsewhere": (_peer_elsewhere, ["d0:1: remote_port: names port 1 of domain 1, which "
                                                   "is connected to port 7 of domain 0: the peers disagree",
                                                   "d1:1: remote_port: names port 7 of domain 0, which "
                                                   "is closed: the peers disagree"]),
    "pending on a closed port": (_pending_closed, ["d0:1: word.pending: PENDING on a closed port (Xen's "
                                                   "close clears it)"]),
    "closed record not clean": (_stale_closed_record, ["d0:1: channel: a closed port's record keeps "
                                                       "fields of its last binding (a close cut short)"]),
    "bound without a word": (_no_word, ["d0:1500: event_word: bound, but the event array has no word "
                                        "for it (1024 ports)"]),
    "stale local head": (_local_head, ["domain 0 vCPU 0 queue 7: local_head: the guest's local head names port 1, "
                                       "which is not linked in this queue (a consumer killed mid-batch)"]),
    "READY with nothing queued": (_ready_empty, ["domain 0 vCPU 0 queue 3: ready: READY is set but nothing is "
                                                 "queued (the head names port 0)"]),
    "tail behind the chain": (_tail, ["domain 0 vCPU 0 queue 7: tail: Xen's tail names port 1, but the queue ends "
                                      "at port 2"]),
    "LINK out of the chain": (_link_out, ["domain 0 vCPU 0 queue 7: word[1].link: the chain's last word links to "
                                          "port 2, which is not linked in this queue"]),
    "intent left": (_intent, ["journal: intent: bind_ipi by domain 0 (pid {pid}) was cut short: 2 step(s) to redo "
                              "(channel, enable)"]),
}


@pytest.mark.parametrize("case", sorted(CHECK_CASES))
def test_check_names_each_inconsistency_and_repair_mends_it(tmp_path, case, capsys):
    state = str(tmp_path / "host")
    create_host(state, nr_domains=3, nr_vcpus=2, max_ports_dom0=2048)
    build, expected = CHECK_CASES[case]
    h = SimHost(state)
    build(h)
    h.consumers.claimed.clear()  # (so that this process's claim does not count as a live consumer)
    for d in h.domains.values():
        for v in range(d.mem.nr_vcpus):
            d.mem.set_consumer(v, 0)
    expected = [line.format(pid=os.getpid()) for line in expected]
    assert check_host(state)[0] == expected
    before = digest(state)
    assert main(["--state", state, "sim", "check"]) == 1
    out, _ = capsys.readouterr()
    assert out.splitlines() == expected and digest(state) == before
    assert main(["--state", state, "sim", "check", "--repair"]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[-1].startswith("clean after") and all(line.startswith("repaired: ") for line in lines[:-1])
    assert main(["--state", state, "sim", "check"]) == 0
    h.close()


def test_check_of_a_healthy_busy_host_is_clean(state, capsys):
    with SimHost(state) as h:
        _setup(h)
        for _ in range(3):
            a = h.bind_ipi(0, 0, 1)
            h.send(0, 0, a)
            h.set_priority(0, 0, a, 3)
        h.consume(0, 0, 2, timeout=0)
        p = h.bind_ipi(0, 0)
        h.send(0, 0, p)
        h.close_port(0, 0, p)  # closed, still LINKED: Xen's normal state until consumed
    assert main(["--state", state, "sim", "check"]) == 0
    assert capsys.readouterr().out == "clean\n"


def test_check_reports_a_bad_record_as_one_line(state):
    with SimHost(state) as h:
        rp = h.alloc_unbound(1, 1, 0)
        h.bind_interdomain(0, 0, 1, rp)
        _write_chan(h, 0, 1, remote_port=500)
    left = check_host(state)[0]
    assert len(left) == 1 and "field channel[1].remote_port: port 500 out of range 1..63 of domain 1" in left[0]
    assert check_host(state, repair=True)[0] == left  # nothing here can say what the record was


def test_kill_campaign_small():
    from tests.crash_campaign import run

    f = run(60, quiet=True)
    assert f["kills"] >= 60 and f["inconsistent"] == 0, f["lines"]


@pytest.mark.slow
def test_kill_campaign():
    """300 SIGKILLs at random instants (half the rounds sleeping inside updates): 0 inconsistent files."""
    from tests.crash_campaign import run

    f = run(300, quiet=True)
    assert f["kills"] >= 300 and f["inconsistent"] == 0, f["lines"]
    assert f["inside_update"] > 0
