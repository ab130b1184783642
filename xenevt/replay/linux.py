"""Replays of Linux's event-channel bugs (drivers/xen/events/), each with its fault switch in the simulated guest
kernel or libxenevtchn (xenevt/sim)."""

from __future__ import annotations

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
