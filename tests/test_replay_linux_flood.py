"""The switch of the simulated Linux's device binding that xenevt/replay/linux.py's linux-flood-no-lateeoi turns on
(LINUX_NO_LATEEOI: Linux before XSA-332/XSA-391): under it a PV device's channel is bound with the plain edge chip,
so a rogue peer's every notify that finds the port idle is handled and unmasked at once, where the fixed kernel
counts the spurious events and delays the EOI; and the signature names that bug only for a storm taken event by
event by a kernel keeping no xenbus counters."""

from __future__ import annotations

import pytest

from tests.test_lateeoi import sample
from xenevt.engine import faults
from xenevt.errors import XenevtError
from xenevt.evidence import doctor
from xenevt.evidence.history import resemble
from xenevt.evidence.model import CounterFacts, DomainFacts, Evidence, PortFacts
from xenevt.evidence.report import Finding, Report
from xenevt.sim.host import SimHost, create_host
from xenevt.sim.lateeoi import EVT_MASK_REASON_EOI_PENDING, F_ON_LIST, R_DELAYED, R_FLAGS, R_REASON, R_SPURIOUS

BUG = "linux-flood-no-lateeoi"
FLOOD = 200


@pytest.fixture(params=["fifo", "2l"])
def host(request, tmp_path, sim_path):
    d = str(tmp_path / "host")
    create_host(d, nr_domains=2, nr_vcpus=2, abi=request.param, force=True)
    with SimHost(d) as h:
        yield h


def _vif(h: SimHost, old: bool) -> tuple[int, int, int]:
    """dom1's vif served by dom0, bound as the kernel before lateeoi (``old``) or since; its channel's first event
    (Xen leaves a new interdomain end pending) taken.  Returns (front port, back port, back port's vCPU)."""
    if old:
        with faults.switched_on(faults.LINUX_NO_LATEEOI):
            made = h.device_add("vif", 1, 0)
    else:
        made = h.device_add("vif", 1, 0)
    front, back = made["ports"][0]["port"], made["ports"][0]["peer"]
    for d in (0, 1):
        for v in (0, 1):
            h.serve(d, v, delayed=False)
    return front, back, h.status(0, 0, back).vcpu


def _flood(h: SimHost, front: int, back: int, vcpu: int) -> int:
    """dom1 notifies FLOOD times with nothing on the ring, dom0's vCPU running an upcall after each (no timer: the
    delayed EOIs wait); returns how many events dom0 handled on ``back``."""
    handled = 0
    for _ in range(FLOOD):
        h.push(1, 1, front, 0)
        handled += h.serve(0, vcpu, delayed=False).count(back)
    return handled


def test_before_lateeoi_every_flood_event_is_handled_at_once(host):
    front, back, vcpu = _vif(host, old=True)
    assert faults.active() == 0
    assert _flood(host, front, back, vcpu) == FLOOD  # an upcall for each notify
    st = host.status(0, 0, back)
    assert not st.flags["masked"] and not st.flags["pending"]  # acked and unmasked at once, nothing waiting
    # no lateeoi record at either end, so no spurious count, no delayed EOI, no xenbus counters
    assert host.lateeoi.record(0, back) is None and host.lateeoi.record(1, front) is None
    assert host.xenbus_counters(0) == [] and host.xenbus_counters(1) == []
    with pytest.raises(XenevtError, match="not a lateeoi device port"):
        host.lateeoi.disable(0, back)
    # the switch decided at the binding: a device bound after it went off is lateeoi
    assert host.lateeoi.record(0, host.device_add("vbd", 1, 0)["ports"][0]["peer"]) is not None


def test_since_lateeoi_the_flood_is_counted_spurious_and_its_eoi_delayed(host):
    front, back, vcpu = _vif(host, old=False)
    handled = _flood(host, front, back, vcpu)
    # spurious twice in a row (the channel's first event was): the EOI held back a jiffy, the port masked for it,
    # every later notify coalescing behind the mask
    assert handled <= 2, handled
    st = host.status(0, 0, back)
    assert st.flags["masked"] and st.flags["pending"]
    rec = host.lateeoi.record(0, back)
    assert rec[R_FLAGS] & F_ON_LIST and rec[R_REASON] == EVT_MASK_REASON_EOI_PENDING
    assert rec[R_SPURIOUS] >= 2 and rec[R_DELAYED] >= 1
    ((node, _, c),) = host.xenbus_counters(0)
    assert node == "backend/vif/1/0" and c.spurious_events >= 2 and c.jiffies_eoi_delayed >= 1
    host.lateeoi.flush(0)  # the delayed work: unmasked, the waiting event raised and taken once
    assert host.serve(0, vcpu, delayed=False).count(back) == 1


def _storm(raised: int | None, handled: int, xenbus: bool = False, rule: str = "event-storm") -> bool:
    """Whether doctor says ``rule``'s finding on dom0's port 11 (interdomain to dom1) looks like this bug, with
    these counts, the domain keeping a xenbus device's counters or not."""
    dom = DomainFacts(0, "FIFO", {11: PortFacts(11, "interdomain", 0, 1, 11)},
                      counters=[CounterFacts("port 11", "", 11, raised, handled)])
    if xenbus:
        dom.counters.append(CounterFacts("xenbus backend/vif/1/0", "xenbus vif-1-0", None, None, handled, 0, 0))
    f = Finding("warning", rule, 0, [11], "t", "e", "a")
    resemble(Report([f]), Evidence("test", {0: dom}))
    return f.resembles == BUG


def test_the_signature_is_a_storm_taken_event_by_event_by_a_kernel_without_xenbus_counters():
    assert _storm(30_000, 10_000)
    assert not _storm(30_000, 10_000, xenbus=True)  # a busy device on a kernel that counts (5.12 and later)
    assert not _storm(30_000, 200)   # throttled (lateeoi before the counters: 5.10, 5.11)
    assert not _storm(None, 30_000)  # a real kernel's /proc/interrupts: whether it kept pace is not known
    assert not _storm(30_000, 30_000, rule="spurious-events")


def test_a_storm_nobody_takes_does_not_look_like_it(tmp_path):
    """A plain channel flooded while its kernel takes nothing (a stopped guest, histories' storm): a storm, not
    this bug."""
    d = str(tmp_path / "host")
    create_host(d, nr_domains=2, nr_vcpus=2, force=True)
    with SimHost(d) as h:
        back = h.alloc_unbound(0, 0, 1)
        front = h.bind_interdomain(1, 1, 0, back)
        before = sample(d)
        for _ in range(300):
            h.send(1, 1, front)
    after = sample(d)
    after.taken_at = before.taken_at + 0.01
    got = [f for f in doctor.examine(after, before).findings if f.rule == "event-storm"]
    assert [(f.domain, f.ports, f.resembles) for f in got] == [(0, [back], None)]
