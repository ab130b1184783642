"""Xen FIFO replays (xenevt/replay/xen_fifo.py) beyond tests/test_replay.py: the rule the 917c123029 replay added
and the counters it reads; that each signature names its bug only with the evidence that bug leaves, not on the
same finding from another cause; and the switches acting alike in the C engine and the reference."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenevt.engine import faults
from xenevt.evidence import doctor
from xenevt.evidence.model import CounterFacts, DomainFacts, Evidence, PortFacts, VcpuFacts

from . import writer
from .test_differential import OPS, PORTS, lockstep


def _dom(port: PortFacts, raised: int | None, handled: int | None, heads: list[int] | None = None,
         abi: str = "FIFO") -> DomainFacts:
    heads = heads if heads is not None else [0] * 16
    return DomainFacts(1, abi=abi, ports={port.port: port},
                       vcpus={0: VcpuFacts(0, control_block=True, ready=0, heads=heads)},
                       counters=[CounterFacts(f"port {port.port}", port=port.port, raised=raised, handled=handled)])


def _idle(port: int = 5, **kw) -> PortFacts:
    return PortFacts(port, kw.pop("state", "interdomain"), vcpu=0, priority=7, remote_domain=0, remote_port=11,
                     pending=kw.pop("pending", False), masked=kw.pop("masked", False), linked=False, **kw)


def _examine(dom: DomainFacts, prev: DomainFacts | None = None):
    ev = Evidence("t", taken_at=200.0)
    ev.domains[1] = dom
    since = None
    if prev is not None:
        since = Evidence("t", taken_at=100.0)
        since.domains[1] = prev
    return doctor.examine(ev, since)


def _found(rep) -> dict[tuple[str, tuple[int, ...]], tuple[str, str | None]]:
    return {(f.rule, tuple(f.ports)): (f.severity, f.resembles) for f in rep.findings}


def test_events_raised_and_vanished_are_a_warning_then_an_error():
    rep = _examine(_dom(_idle(), 1, 0))
    assert _found(rep) == {("raised-not-delivered", (5,)): ("warning", "xen-no-page-dropped")}
    rep = _examine(_dom(_idle(), 1, 0), _dom(_idle(), 1, 0))
    assert _found(rep) == {("raised-not-delivered", (5,)): ("error", "xen-no-page-dropped")}


def test_delivered_masked_waiting_or_uncounted_events_are_not_lost():
    assert not _examine(_dom(_idle(), 3, 1)).findings                  # delivered (merged while pending)
    assert not _examine(_dom(_idle(masked=True), 1, 0)).findings       # a masked port's guest may clear it
    assert not _examine(_dom(_idle(), None, 0)).findings               # raised not counted (real Xen)
    assert not _examine(_dom(_idle(), 0, 0)).findings
    assert not _examine(_dom(_idle(state="closed"), 1, 0)).findings



def test_on_2_level_events_raised_and_vanished_are_lost_too_and_look_like_mini_os_only_on_an_interdomain_port():
    """2-level has no page to miss: Xen always sets the pending bit, so a raised event that vanished unhandled
    was cleared by the guest (Mini-OS's bind before b9d1950675); FIFO's no-page signature never matches there."""
    two = {"abi": "2-level"}
    rep = _examine(_dom(_idle(), 2, 0, **two), _dom(_idle(), 2, 0, **two))
    assert _found(rep) == {("raised-not-delivered", (5,)): ("error", "minios-bind-clears-pending")}
    rep = _examine(_dom(_idle(state="virq"), 1, 0, **two))
    assert _found(rep) == {("raised-not-delivered", (5,)): ("warning", None)}
    assert not _examine(_dom(_idle(), 2, 1, **two)).findings
    waiting = _examine(_dom(_idle(pending=True, masked=True), 2, 0, **two))  # (waits behind its mask: not lost)
    assert "raised-not-delivered" not in {f.rule for f in waiting.findings}


def test_the_no_page_signature_needs_a_queue_nothing_was_ever_linked_on():
    heads = [0] * 16
    heads[7] = 9  # something was linked on the port's queue: its events reached the array and were lost later
    rep = _examine(_dom(_idle(), 1, 0, heads))
    assert _found(rep) == {("raised-not-delivered", (5,)): ("warning", None)}


def test_the_pending_unqueued_signature_needs_nothing_raised_or_delivered_on_a_never_linked_queue():
    port = _idle(pending=True)
    rep = _examine(_dom(port, 0, 0), _dom(port, 0, 0))
    assert _found(rep) == {("pending-not-queued", (5,)): ("error", "xen-pending-unqueued")}
    rep = _examine(_dom(port, 1, 0), _dom(port, 1, 0))  # an event raised to the guest: lost later, another cause
    assert _found(rep) == {("pending-not-queued", (5,)): ("error", None)}
    rep = _examine(_dom(port, 2, 1), _dom(port, 2, 1))  # delivered before
    assert _found(rep) == {("pending-not-queued", (5,)): ("error", None)}
    heads = [0] * 16
    heads[7] = 5
    rep = _examine(_dom(port, 0, 0, heads), _dom(port, 0, 0, heads))  # linked once (a guest cleared LINKED)
    assert _found(rep) == {("pending-not-queued", (5,)): ("error", None)}


def _moved_tail(moved: bool) -> Evidence:
    """The e33d4257fc replay's end: port 12 LINKED and PENDING, reached from no head; vCPU 0's queue 7 still
    names port 11 as its head, which has (``moved``) or has not moved to vCPU 1 since."""
    from xenevt.dump import build_dump
    from xenevt.evidence import collect

    mem = writer.domain(nr_vcpus=2, unmasked=(11, 13), ports={12: "PL"}, heads={(0, 7): 11, (1, 7): 11})
    ev = Evidence("t")
    collect.add_dump(ev, build_dump(mem, 1, "t", guest_known=True))
    dom = ev.domains[1]
    for p, v in ((11, 1 if moved else 0), (12, 0), (13, 1)):  # (the channels, as EVTCHNOP_status tells them)
        w = dom.ports.get(p)
        dom.ports[p] = PortFacts(p, "interdomain", vcpu=v, priority=7, remote_domain=0, remote_port=p,
                                 pending=w.pending if w else False, masked=False, linked=w.linked if w else False)
    return ev


def test_the_old_tail_signature_needs_the_lost_ports_queue_headed_by_a_moved_port():
    rep = doctor.examine(_moved_tail(moved=True))
    assert _found(rep) == {("linked-unreachable", (12,)): ("error", "xen-old-tail-linked")}
    rep = doctor.examine(_moved_tail(moved=False))
    assert _found(rep) == {("linked-unreachable", (12,)): ("error", None)}


def test_a_port_bound_afresh_counts_from_zero_and_a_drop_for_want_of_a_control_block_is_not_counted(tmp_path):
    """raised-not-delivered reads the simulator's per-port counters: they must be this binding's (a port closed
    with its event undelivered and bound again is no lost event), and count only events raised to the guest."""
    from xenevt.sim.host import SimHost, create_host

    create_host(str(tmp_path), online=1, force=True)
    with SimHost(str(tmp_path)) as h:
        port = h.bind_ipi(1, 1, 0, masked=True)  # (masked: the event stays off the queues, the port reusable)
        h.send(1, 1, port)
        assert h.counters(1)[port] == (1, 0)
        h.close_port(1, 1, port)
        assert h.counters(1)[port] == (1, 0)  # (kept while the port is free)
        assert h.bind_ipi(1, 1, 0) == port
        assert h.counters(1)[port] == (0, 0)
        other = h.bind_ipi(1, 1, 1)  # vCPU 1 never brought up: no control block, Xen drops the event
        h.send(1, 1, other)
        assert h.counters(1)[other] == (0, 0)
        h.send(1, 1, port)
        assert h.counters(1)[port] == (1, 0)


# --- the switches in the C engine and the reference alike, on random operation sequences --------------------------
SWITCHES = [faults.OLD_TAIL_LINKED, faults.PENDING_UNQUEUED, faults.NO_PAGE_DROPPED,
            faults.OLD_TAIL_LINKED | faults.PENDING_UNQUEUED | faults.NO_PAGE_DROPPED | faults.READY_EVERY_ADD]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mask=st.sampled_from(SWITCHES),
    nr_vcpus=st.integers(1, 3),
    pages=st.sampled_from([1, 1, 0]),
    cbs=st.one_of(st.just({0, 1, 2}), st.sets(st.integers(0, 2))),
    unmasked=st.one_of(st.just(list(range(1, 13)) + list(range(1020, 1031))), st.lists(PORTS, max_size=30)),
    ops=st.lists(OPS(), min_size=5, max_size=60),
)
def test_c_and_reference_agree_with_the_switches_on(mask, nr_vcpus, pages, cbs, unmasked, ops):
    with faults.switched_on(mask):
        lockstep(nr_vcpus, pages, 2, cbs, unmasked, ops)
