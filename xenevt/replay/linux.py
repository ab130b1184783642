"""Replays of Linux's event-channel bugs (drivers/xen/events/), each with its fault switch in the simulated guest
kernel or libxenevtchn (xenevt/sim)."""

from __future__ import annotations

import time

from ..engine import faults
from . import Expect, Stage, replay

FRONT = 1      # the domU whose vif floods
BACK = 0       # dom0, its netback


def _serve(st: Stage) -> list[int]:
    """dom0's kernel, one upcall per vCPU; its delayed EOIs wait for the replay's ``flush`` (their timer)."""
    return [p for v in range(2) for p in st.host.serve(BACK, v, delayed=False)]


@replay("linux-unmask-despite-eoi", "linux-unmask-despite-eoi",
        "dom1's vif notifies dom0's netback with no work until its EOI is delayed; netback disables and enables its "
        "irq; dom1 notifies again; the delayed EOI comes")
def unmask_despite_eoi(st: Stage) -> Expect:
    h = st.host
    made = h.device_add("vif", FRONT, BACK)
    front, back = made["ports"][0]["port"], made["ports"][0]["peer"]
    _serve(st)  # each channel's first event (Xen leaves a new interdomain end pending): no work, spurious
    st.say(f"d{FRONT}'s vif 0 served by dom0: its tx port {front} <-> dom0's {back}, bound lateeoi at both ends")
    h.push(FRONT, FRONT, front, 0)
    _serve(st)
    st.say(f"d{FRONT} notifies {front} with nothing on the ring, twice in a row: dom0's kernel masks {back} for its "
           "EOI and holds the EOI back (spurious past the threshold)")
    h.lateeoi.disable(BACK, back)
    with st.fault(faults.LINUX_UNMASK_DESPITE_EOI):
        h.lateeoi.enable(BACK, back)
    masked = h.status(BACK, BACK, back).flags["masked"]
    st.say(f"netback disables and enables its irq: the unmask {'leaves' if masked else 'clears'} the mask of {back}"
           + (" (its EOI still pending)" if masked else " although its EOI is pending (the bug: one mask for all)"))
    h.push(FRONT, FRONT, front, 1)
    handled = _serve(st)
    st.say(f"d{FRONT} puts a request on the ring and notifies: " + (
        f"dom0's vCPU takes {back} while its handler is still active: ignored, left pending, on no queue"
        if back in handled else f"{back} waits pending behind the mask"))
    h.lateeoi.flush(BACK)
    _serve(st)
    st.say(f"the delayed EOI: {back} unmasked " + ("again: nothing raises the waiting event, the request is never "
                                                   "seen" if back in handled else "and its waiting event raised: "
                                                   "netback handles the request"))
    return Expect("pending-not-queued", BACK, back)


FLOOD_SECONDS = 0.4  # each burst of the rogue vif's loop: before doctor's first look, and between its two looks
PER_UPCALL = 3       # the rogue's notifies for each upcall dom0 runs: its loop on its own CPU outpaces the handler
DELAYED_EVERY = 32   # upcalls between two runs of the victim CPU's delayed-EOI work (its timer)
STORM_RATE = 2000    # events/s: doctor's storm threshold for the replay (its --storm-rate)


def _flood(h, front: int, back: int, vcpu: int) -> tuple[int, int]:
    """dom1's vif notifies ``front`` in a tight loop with nothing on the ring for FLOOD_SECONDS, dom0's vCPU taking
    an upcall after each PER_UPCALL of them (the notifies that land while the event is pending coalesce).  Returns
    (notifies, events dom0's driver handled)."""
    sent = handled = 0
    end = time.monotonic() + FLOOD_SECONDS
    while time.monotonic() < end:
        for _ in range(DELAYED_EVERY):
            for _ in range(PER_UPCALL):
                h.push(FRONT, FRONT, front, 0)
            handled += h.serve(BACK, vcpu, delayed=False).count(back)
        sent += DELAYED_EVERY * PER_UPCALL
        h.lateeoi.run_delayed(BACK, vcpu)  # the delayed EOIs due by now (a kernel before lateeoi has none)
    return sent, handled


@replay("linux-flood-no-lateeoi", "linux-flood-no-lateeoi",
        "dom1's vif notifies dom0's netback in a tight loop with nothing on the ring, before doctor's first look "
        "and between its two; dom0's kernel takes each upcall as it comes",
        fixed_findings=("event-storm", "spurious-events", "eoi-delayed", "masked-busy"))
def flood_no_lateeoi(st: Stage) -> Expect:
    from ..sim.host import SimHost

    h = st.host
    with st.fault(faults.LINUX_NO_LATEEOI):  # the binding decides: the kernels bind the device's channel as before
        made = h.device_add("vif", FRONT, BACK)
    front, back = made["ports"][0]["port"], made["ports"][0]["peer"]
    vcpu = h.status(BACK, BACK, back).vcpu
    _serve(st)  # (Xen leaves a new interdomain end pending: the first event)
    st.say(f"d{FRONT}'s vif 0 served by dom0: its tx port {front} <-> dom0's {back}, " + (
        "bound with the lateeoi chip at both ends" if st.fixed else
        "bound with the plain edge chip at both ends (no lateeoi, no xenbus event counters)"))
    sent, handled = _flood(h, front, back, vcpu)

    def told(sent: int, handled: int) -> str:
        return (f"d{FRONT} notifies {front} {sent:,} times in {FLOOD_SECONDS} s with nothing on the ring; dom0's "
                f"netback handles {handled:,} of them: " + (
                    "each upcall acks, handles and unmasks its event at once (nothing throttles the peer)"
                    if handled * 10 >= sent else
                    "its spurious events past the threshold delay the EOI, the rest wait behind the mask"))

    st.say(told(sent, handled))

    def more() -> None:  # the flood goes on while doctor waits for its second look (the binding is what it was)
        with SimHost(st.state_dir) as h2:
            st.say("between doctor's two looks: " + told(*_flood(h2, front, back, vcpu)))

    # doctor as an operator watching this backend would run it: a vif with no work on its ring past 2,000 events/s
    # is a storm already (the default 10,000/s leaves room for busy devices, and for a slow machine's simulator)
    st.say(f"doctor looks twice with --storm-rate {STORM_RATE:,}")
    return Expect("event-storm", BACK, back, samples=2, between=more, storm_rate=STORM_RATE)
