"""Replays of Mini-OS's event-channel bugs (Xen's extras/mini-os, the stub domains' kernel): the replay's bare
domain is the Mini-OS guest, its script that kernel's calls (the simulator has no Mini-OS of its own), the fault
switch the old order of those calls."""

from __future__ import annotations

from ..engine import faults
from . import Expect, Stage, replay

STUB = 1       # the stub domain, running Mini-OS (2-level, every port masked from boot)


@replay("minios-bind-clears-pending", "minios-bind-clears-pending",
        "a Mini-OS stub domain binds to a port dom0 offered it; dom0 has work at once and notifies; Mini-OS then "
        "clears the new port's pending bit (so its handler is not called before it is ready), sets the handler and "
        "unmasks", abi="2l", bare=(STUB,))
def bind_clears_pending(st: Stage) -> Expect:
    h = st.host
    theirs = h.alloc_unbound(0, 0, STUB)
    mine = h.bind_interdomain(STUB, STUB, 0, theirs, masked=True)
    st.say(f"dom0 offers port {theirs} to d{STUB}; Mini-OS binds to it: its port {mine}, masked (Mini-OS masks "
           "every port at boot); Xen sets the new end pending, so nothing sent before the bind is lost")
    h.send(0, 0, theirs)
    st.say(f"dom0 sees the connection, puts a request on the ring and notifies {theirs}: {mine} pending already")
    with st.fault(faults.MINIOS_BIND_CLEARS_PENDING):
        if faults.on(faults.MINIOS_BIND_CLEARS_PENDING):
            h.file.domains[STUB].l2.guest_clear_pending(mine)  # clear_evtchn(): a write of its own shared info
    st.say("Mini-OS's evtchn_bind_interdomain() " + (
        f"clears {mine}'s pending bit, lest the handler run before it is set (the bug): dom0's request is "
        "forgotten" if not st.fixed else f"leaves {mine}'s pending bit alone (as fixed): the caller unmasks when "
                                         "ready"))
    h.unmask(STUB, STUB, mine)
    got = h.consume(STUB, 0, 16)
    st.say(f"Mini-OS sets the handler and unmasks {mine}; its upcall handles {got or 'nothing'}"
           + ("" if got else f": dom0 waits for an answer to a request d{STUB} never heard of"))
    return Expect("raised-not-delivered", STUB, mine, samples=2)
