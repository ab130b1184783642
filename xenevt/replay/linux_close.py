"""Replays of Linux's event-channel bugs around closing ports and CPU hotplug (drivers/xen/events/), each with its
fault switch in the simulated guest kernel (xenevt/sim/lifecycle.py).  Linux's lateeoi bugs are in linux.py."""

from __future__ import annotations

from .. import abi
from ..engine import faults
from . import Expect, Stage, replay

GUEST = 1      # the domU whose CPU goes down


@replay("linux-close-linked-offline", "linux-close-linked-offline",
        "a domU's CPU 1 goes down with its timer VIRQ and reschedule IPI raised, not yet handled; Linux closes the "
        "CPU's ports without draining its queues; on a Xen of the time (busy ports reused) a backend's new "
        "channel gets the timer's old port: its events never reach vCPU 0")
def close_linked_offline(st: Stage) -> Expect:
    h = st.host
    dom = h.domains[GUEST]
    cpu1 = [(p, h.file.rec(dom, p)) for p in dom.open_ports() if h.file.rec(dom, p).notify_vcpu == 1]
    timer = next(p for p, ch in cpu1 if ch.state == abi.ECS_VIRQ and ch.aux == abi.VIRQS["timer"])
    resched = min(p for p, ch in cpu1 if ch.state == abi.ECS_IPI)  # (the first IPI Linux binds)
    h.raise_virq(GUEST, abi.VIRQS["timer"], 1)
    h.send(GUEST, GUEST, resched)
    st.say(f"d{GUEST}'s CPU 1 has its timer VIRQ on port {timer} and its reschedule IPI on port {resched}; both "
           "are raised (LINKED on vCPU 1's queue) just before CPU 1 goes offline, so its handler never runs")
    with st.fault(faults.CPU_DEAD_NO_DRAIN):
        h.cpu_down(GUEST, GUEST, 1)
    drained = st.fixed
    st.say(f"d{GUEST} takes CPU 1 down: VCPUOP_down, its IPIs and VIRQs closed"
           + (", its queues drained (as fixed: the events dropped, nothing left LINKED)" if drained else
              ", its queues left as they are (the bug: ports "
              f"{timer} and {resched} closed while still LINKED on vCPU 1's queue)"))
    with faults.switched_on(faults.REUSE_BUSY_PORT):  # (the Xen Linux then ran on, fixed or not)
        port, peer = st.backend_channel(GUEST)
    st.say(f"a backend in dom0 connects a new channel (d{GUEST}'s port {port}, dom0's {peer}, on vCPU 0): Xen "
           "before 78e24c269b hands out the lowest free port, busy or not"
           + (" (the busy one)" if port == timer and not drained else ""))
    for _ in range(3):
        h.send(0, 0, peer)
    got = h.consume(GUEST, 0, 16)
    st.say(f"dom0 raises it three times; d{GUEST}'s vCPU 0 handles {got or 'nothing'}"
           + ("" if got else ": each send set PENDING in a word already LINKED on the dead CPU's queue"))
    return Expect("queued-on-down-vcpu", GUEST, port, vcpu=1)


@replay("linux-offline-moved-port", "linux-close-linked-offline",
        "a frontend's port on a domU's CPU 1 is raised and not yet handled when CPU 1 goes down; Linux moves it to "
        "CPU 0 but does not drain CPU 1's queues: the backend's every later event on it is lost")
def offline_moved_port(st: Stage) -> Expect:
    h = st.host
    port, peer = st.backend_channel(GUEST)
    h.bind_vcpu(GUEST, GUEST, port, 1)
    st.say(f"d{GUEST}'s frontend binds port {port} to its backend in dom0 (port {peer}); its interrupt is on CPU 1")
    h.send(0, 0, peer)
    st.say(f"the backend raises {port}: LINKED on vCPU 1's queue; CPU 1 goes offline before its handler runs")
    with st.fault(faults.CPU_DEAD_NO_DRAIN):
        done = h.cpu_down(GUEST, GUEST, 1)
    moved = next((line for line in done if line.startswith(f"moved port {port} ")), "")
    st.say(f"d{GUEST} takes CPU 1 down: {moved or f'port {port} not moved'} (EVTCHNOP_bind_vcpu: the event stays "
           "where it is queued), VCPUOP_down, its per-CPU ports closed"
           + (", its queues drained (as fixed: the event unlinked, PENDING left)" if st.fixed else
              ", its queues left as they are (the bug)"))
    for _ in range(3):
        h.send(0, 0, peer)
    got = h.consume(GUEST, 0, 16)
    st.say(f"the backend raises {port} three times; d{GUEST}'s vCPU 0 handles {got or 'nothing'}"
           + (f": {port}'s word is still LINKED on the dead CPU's queue, so each event only finds PENDING set "
              "(the disk stalls)" if not got else f" (the word unlinked: Xen links {port} on vCPU 0's queue)"))
    return Expect("queued-on-down-vcpu", GUEST, port, vcpu=1)
