"""Replays of Xen's event-channel bugs outside the FIFO queues (allocation, close, reset, limits), each with its
fault switch in the simulator's Python-side Xen (xenevt/sim)."""

from __future__ import annotations

import errno

from .. import abi
from ..engine import faults
from ..errors import ChannelError
from ..sim.foreign import CONTROL_BLOCK_GFN
from . import Expect, Stage, replay

GUEST = 1      # the domU whose ports the bugs break


@replay("xen-reuse-busy-port", "xen-reuse-busy-port",
        "a domU's port is raised on vCPU 1's queue and closed before vCPU 1 runs its handler; the domU binds an IPI "
        "for vCPU 0, gets the same port, and raises it: the IPI goes onto vCPU 1's queue, vCPU 0 never hears of it",
        real_xen=("g-fifo-close-while-linked",))
def reuse_busy_port(st: Stage) -> Expect:
    h = st.host
    mine, peer = st.backend_channel(GUEST)
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


@replay("xen-close-keeps-pending", "xen-close-keeps-pending",
        "a 2-level domU's frontend is torn down while dom0's last event on it is pending; the domU then binds an "
        "IPI, which gets the same port number, and unmasks it", abi="2l", real_xen=("g-2l-close-clears-pending",))
def close_keeps_pending(st: Stage) -> Expect:
    h = st.host
    mine, peer = st.backend_channel(GUEST)
    h.consume(GUEST, 0, 16)  # (the new end's first event, if any)
    st.say(f"d{GUEST} (2-level) offers port {mine} to dom0's backend, which binds its end ({peer})")
    h.mask(GUEST, GUEST, mine)
    h.send(0, 0, peer)
    st.say(f"d{GUEST}'s driver shuts down and masks {mine}; dom0's last event arrives: pending behind the mask")
    with st.fault(faults.CLOSE_KEEPS_PENDING):
        h.close_port(GUEST, GUEST, mine)
    st.say(f"d{GUEST} closes {mine}: " + ("its pending bit left set (the bug)" if not st.fixed
                                        else "Xen clears its pending bit (as fixed)"))
    ipi = h.bind_ipi(GUEST, GUEST, 0)
    got = h.consume(GUEST, 0, 16)
    st.say(f"d{GUEST} binds an IPI for vCPU 0: port {ipi}; Linux unmasks it; vCPU 0 handles {got or 'nothing'}"
           + (": an IPI no CPU sent, the old channel's event" if ipi in got else ""))
    return Expect("delivered-never-raised", GUEST, ipi, vcpu=0)


@replay("xen-reset-racing-open", "xen-reset-racing-open",
        "a domU on FIFO with every port below 4096 bound and LINKED resets itself (its next kernel uses 2-level); "
        "its vCPU 1 opens a port while the reset has closed the others: that port, above 4095, stays bound on "
        "2-level", host={"percpu": False, "abis": {GUEST: "2l"}, "max_ports_domu": 8192})
def reset_racing_open(st: Stage) -> Expect:
    h = st.host
    for v in range(2):
        h.init_control(GUEST, GUEST, v, CONTROL_BLOCK_GFN + v, 0)
    port = 0
    while port < abi.EVTCHN_2L_NR_CHANNELS - 1:
        port = h.bind_ipi(GUEST, GUEST, 0)
        h.send(GUEST, GUEST, port)
    st.say(f"d{GUEST} (on FIFO, limit 8192, its next kernel on 2-level) binds IPIs 1..{port} on vCPU 0 and raises "
           "each: all LINKED on vCPU 0's queue, not yet handled")
    raced: list[int] = []

    def vcpu1_opens(point: int, _port: int) -> None:
        if point == faults.POINT_RESET_CLOSED and not raced:
            raced.append(h.bind_ipi(GUEST, GUEST, 1))
            st.say(f"  (the reset has closed every port, the event lock let go) d{GUEST}'s vCPU 1 binds an IPI: "
                   f"port {raced[0]}, the ports below it closed but still LINKED (busy)")

    with st.fault(faults.RESET_UNLOCKED, vcpu1_opens):
        h.reset(GUEST, GUEST)
    st.say(f"d{GUEST} resets its event channels (EVTCHNOP_reset): every port closed, FIFO torn down, back on "
           "2-level" + (f", port {raced[0]} left bound (the bug: no check for ports opened meanwhile)" if raced
                        else " (as fixed: under the event lock, nothing opened meanwhile)"))
    if not raced:
        raced.append(h.bind_ipi(GUEST, GUEST, 1))
        st.say(f"d{GUEST}'s vCPU 1 binds its IPI after the reset: port {raced[0]}")
    return Expect("port-beyond-2l-limit", GUEST, raced[0])


DRIVER, FRONT = 1, 2  # a 32-bit PV driver domain on 2-level, and the domain whose frontends it serves


@replay("xen-compat-2l-limit", "xen-compat-2l-limit",
        "a 32-bit PV driver domain on 2-level (max_event_channels 4096) binds a backend channel for each one a "
        "frontend offers, until its ports 1..1023 are in use; the frontend offers one more and the backend binds it",
        domains=3, host={"abis": {DRIVER: "2l"}, "guest_32": (DRIVER,), "max_ports_domu": 4096},
        fixed_findings=("ports-exhausted",))
def compat_2l_limit(st: Stage) -> Expect:
    h = st.host
    limit = abi.EVTCHN_2L_NR_CHANNELS_32 - 1
    first = back = 0
    while back < limit:
        back = h.bind_interdomain(DRIVER, DRIVER, FRONT, h.alloc_unbound(FRONT, FRONT, DRIVER))
        first = first or back
    st.say(f"d{DRIVER} (a 32-bit guest, on 2-level: 32 words of 32 bits, ports 1..{limit}; its per-CPU ports below "
           f"{first}) binds a backend channel for each one d{FRONT}'s frontends offer: ports {first}..{back}, "
           "every port it can see in use")
    offered = h.alloc_unbound(FRONT, FRONT, DRIVER)
    with st.fault(faults.COMPAT_LIMIT_AT_CREATE):
        try:
            back = h.bind_interdomain(DRIVER, DRIVER, FRONT, offered)
        except ChannelError as e:
            if e.errno != errno.ENOSPC:
                raise
            st.say(f"d{FRONT} offers port {offered}; d{DRIVER}'s backend binds it: refused, ENOSPC (as fixed: Xen "
                   f"judges the limit by the guest's bitness, {limit + 1} ports for a 32-bit guest): \"{e}\"")
            h.close_port(FRONT, FRONT, offered)
            st.say(f"the backend reports the failure; d{FRONT}'s frontend closes port {offered}.  d{DRIVER} is at "
                   "its limit, which doctor rightly reports")
            return Expect("port-beyond-2l-limit", DRIVER, limit + 1)  # (the port the bug would have handed out)
    st.say(f"d{FRONT} offers port {offered}; d{DRIVER}'s backend binds it: port {back} (the bug: Xen recorded the "
           f"limit when it created d{DRIVER}, before its bitness was known, as a 64-bit guest's 4096)")
    st.say(f"port {back} is past d{DRIVER}'s bitmaps: on Xen its pending bit is port {back - limit - 1}'s mask bit "
           f"and its selector bit ({back // 32}) lies past the 32-bit evtchn_pending_sel, in vcpu_info's arch "
           "fields (the simulator keeps its 2-level bitmaps in the 64-bit layout, so no event is raised on it here)")
    return Expect("port-beyond-2l-limit", DRIVER, back)
