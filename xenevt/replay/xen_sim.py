"""Replays of Xen's event-channel bugs outside the FIFO queues (allocation, close, reset, limits), each with its
fault switch in the simulator's Python-side Xen (xenevt/sim)."""

from __future__ import annotations

from ..engine import faults
from . import Expect, Stage, replay

GUEST = 1      # the domU whose ports the bugs break


@replay("xen-reuse-busy-port", "xen-reuse-busy-port",
        "a domU's port is raised on vCPU 1's queue and closed before vCPU 1 runs its handler; the domU binds an IPI "
        "for vCPU 0, gets the same port, and raises it: the IPI goes onto vCPU 1's queue, vCPU 0 never hears of it")
def reuse_busy_port(st: Stage) -> Expect:
    h = st.host
    mine = h.alloc_unbound(GUEST, GUEST, 0)
    peer = h.bind_interdomain(0, 0, GUEST, mine)
    h.bind_vcpu(GUEST, GUEST, mine, 1)
    st.say(f"d{GUEST} binds port {mine} to dom0 (port {peer}) and moves it to vCPU 1")
    h.send(0, 0, peer)
    st.say(f"dom0 raises {mine}: LINKED on vCPU 1's queue; vCPU 1 has not run its upcall handler yet")
    h.close_port(GUEST, GUEST, mine)
    st.say(f"d{GUEST} closes {mine} (Linux's irq teardown does not wait for the event to be unlinked): "
           "free, masked, its word still LINKED on vCPU 1's queue")
    with st.fault(faults.REUSE_BUSY_PORT):
        ipi = h.bind_ipi(GUEST, GUEST, 0)
    st.say(f"d{GUEST} binds an IPI for vCPU 0: Xen hands out port {ipi}"
           + (" (the bug: the busy port, still LINKED)" if ipi == mine else " (as fixed: the busy port skipped)"))
    h.send(GUEST, GUEST, ipi)
    st.say(f"d{GUEST} raises its IPI {ipi}: PENDING set; "
           + ("the word is already LINKED, so Xen links nothing and tells vCPU 0 nothing" if ipi == mine
              else "linked on vCPU 0's queue, vCPU 0 told"))
    got = h.consume(GUEST, 0, 16)
    st.say(f"d{GUEST}'s vCPU 0 runs its handler: {got or 'nothing'}"
           + ("" if got else "; its IPI waits on vCPU 1's queue, where vCPU 1 would take it as its own"))
    return Expect("queued-on-wrong-vcpu", GUEST, ipi, vcpu=1)
