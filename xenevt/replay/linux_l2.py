"""Replays of Linux's 2-level event-channel bugs (drivers/xen/events: its upcall's view of which CPU a port is on),
with their fault switches in the engine's guest side (csrc/twolevel.c and the Python reference)."""

from __future__ import annotations

from ..engine import faults
from . import Expect, Stage, replay

GUEST = 1      # the domU on 2-level whose upcall misses the event
WORD = 64      # ports per selector bit (BITS_PER_LONG on 64-bit)


@replay("linux-l2-port-on-no-cpu", "linux-l2-port-on-no-cpu",
        "a 2-level domU with its first 64 ports in use binds a backend's channel (port 64 or above, no explicit "
        "affinity); dom0 raises it: the upcall on vCPU 0 takes the word's selector bit and finds nothing of its "
        "own there; dom0 raises it again", abi="2l")
def port_on_no_cpu(st: Stage) -> Expect:
    h = st.host
    ipis = [h.bind_ipi(GUEST, GUEST, v % 2) for v in range(WORD - 1)]
    st.say(f"d{GUEST} (2-level) binds IPIs on ports {ipis[0]}..{ipis[-1]}, each on its vCPU: bound explicitly, "
           "so in that CPU's cpu_evtchn_mask")
    mine, theirs = st.backend_channel(GUEST)
    h.consume(GUEST, 0, 64)  # (the new end's first event, if any, is the guest's to take now)
    st.say(f"d{GUEST} offers port {mine} to dom0, which binds its end ({theirs}): bind_evtchn_to_irq() sets no "
           f"affinity, so {mine} is on CPU 0 only if cpu_evtchn_mask was set up that far "
           + ("(the bug: only the first 64 ports were)" if not st.fixed else "(as fixed: every port starts on "
                                                                             "CPU 0)"))
    explicit = set(ipis)

    def on_no_cpu(point: int, port: int) -> int:
        # Linux's cpu_evtchn_mask as the bug left it: ports past the first word on no CPU, unless bound explicitly
        return int(point == faults.POINT_L2_CPU_MASK and port >= WORD and port not in explicit)

    with st.fault(faults.L2_CPU_MASK_UNSET, on_no_cpu):
        h.send(0, 0, theirs)
        st.say(f"dom0 raises {mine}: Xen sets its pending bit, selector bit {mine // WORD} and the upcall flag of "
               "vCPU 0")
        got = h.consume(GUEST, 0, 64)
        st.say(f"d{GUEST}'s vCPU 0 runs its upcall: takes the selector and handles {got or 'nothing'}"
               + (f": {mine} is in no CPU's mask, so its pending bit stays set under a cleared selector bit"
                  if mine not in got else ""))
        h.send(0, 0, theirs)
        got = h.consume(GUEST, 0, 64)
        st.say(f"dom0 raises {mine} again: " + (
            "already pending, so Xen sets no selector bit and no upcall flag; vCPU 0 handles nothing: the "
            "channel is dead until another port of its word is raised on vCPU 0" if mine not in got
            else f"vCPU 0 handles {got}"))
    return Expect("pending-not-queued", GUEST, mine, vcpu=0)


@replay("linux-l2-unmask-on-own-vcpu", "linux-l2-unmask-on-own-vcpu",
        "a 2-level domU's driver masks a backend's port of vCPU 0; dom0 raises it; the driver unmasks it from vCPU "
        "1: the resend goes to vCPU 1's selector and upcall flag, whose upcall finds no port of its own there",
        abi="2l", nameable=False, real_xen=("g-2l-unmask-re-raises-pending",))
def unmask_on_own_vcpu(st: Stage) -> Expect:
    h = st.host
    mine, theirs = st.backend_channel(GUEST)
    h.consume(GUEST, 0, 16)  # (the new end's first event, if any)
    h.mask(GUEST, GUEST, mine)
    st.say(f"d{GUEST} (2-level) binds port {mine} to dom0 ({theirs}), on vCPU 0; its driver masks it")
    h.send(0, 0, theirs)
    st.say(f"dom0 raises {mine}: pending behind the mask, no selector bit, no upcall")
    with st.fault(faults.L2_UNMASK_HERE):
        rc = h.file.domains[GUEST].l2.guest_unmask(mine, vcpu=1)  # Linux's unmask, run on vCPU 1
    if rc == 0:
        h.evtchn_unmask(GUEST, GUEST, mine)
        st.say(f"the driver, on vCPU 1, unmasks {mine}: another vCPU's port, so Linux makes EVTCHNOP_unmask and Xen "
               "sets the selector bit and upcall flag of the port's vCPU 0 (as fixed)")
    else:
        st.say(f"the driver, on vCPU 1, unmasks {mine}: Linux clears the mask and, finding it pending, sets the "
               "selector bit and upcall flag of the vCPU it runs on, vCPU 1 (the bug)")
    got1, got0 = h.consume(GUEST, 1, 16), h.consume(GUEST, 0, 16)
    st.say(f"vCPU 1 runs its upcall: {got1 or 'nothing'} (the port is not its own); vCPU 0 runs its upcall: "
           + (f"{got0}" if got0 else "it was never told"))
    h.send(0, 0, theirs)
    got0 = h.consume(GUEST, 0, 16)
    st.say(f"dom0 raises {mine} again: " + (f"vCPU 0 handles {got0}" if got0 else
                                           "already pending, so no selector bit, no upcall: the channel is dead"))
    return Expect("pending-not-queued", GUEST, mine, vcpu=0)
