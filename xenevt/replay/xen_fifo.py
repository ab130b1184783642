"""Replays of Xen's FIFO event-channel bugs (xen/common/event_fifo.c), each with its fault switch in the engine."""

from __future__ import annotations

from ..engine import faults
from ..sim.foreign import CONTROL_BLOCK_GFN, EVENT_ARRAY_GFN
from . import Expect, Stage, replay

GUEST = 1      # the domU whose queues the bugs break
PRIO = 7       # EVTCHN_FIFO_PRIORITY_DEFAULT: the queue Linux binds everything to


@replay("xen-ready-every-add", "xen-ready-every-add",
        "dom0 raises two events on a domU's vCPU 0 queue; the domU drains it between the LINK and Xen's READY; one "
        "port moves to vCPU 1 and is raised there with another behind it; vCPU 0 takes the stale READY",
        real_xen=("g-fifo-two-events-one-queue", "g-fifo-vcpu-move-while-linked"))
def ready_every_add(st: Stage) -> Expect:
    h = st.host
    (a, a0), (b, b0), (c, c0) = (st.backend_channel(GUEST) for _ in range(3))
    st.say(f"d{GUEST} binds ports {a}, {b} and {c} to dom0 ({a0}, {b0}, {c0}), all on vCPU 0, priority {PRIO}")
    h.send(0, 0, a0)
    st.say(f"dom0 raises {a}: a new head of vCPU 0's queue {PRIO}, READY set")
    drained: list[int] = []

    def guest_drains(point: int, port: int) -> None:
        if point == faults.POINT_BEFORE_READY and not drained:
            drained.extend(h.consume(GUEST, 0, 16))
            st.say(f"  (Xen has linked {port} after {a}, READY not yet set) d{GUEST}'s vCPU 0 handles {drained}: "
                   f"its queue {PRIO} is empty")

    with st.fault(faults.READY_EVERY_ADD, guest_drains):
        h.send(0, 0, b0)
        st.say(f"dom0 raises {b}: linked at the tail, after {a}; Xen then sets READY "
               + ("again (the bug: for every add)" if not st.fixed else "only for a new head (as fixed)"))
    if st.fixed:
        drained.extend(h.consume(GUEST, 0, 16))
        st.say(f"d{GUEST}'s vCPU 0 handles {drained}")
    h.bind_vcpu(GUEST, GUEST, a, 1)
    h.send(0, 0, a0)
    h.bind_vcpu(GUEST, GUEST, c, 1)
    h.send(0, 0, c0)
    st.say(f"d{GUEST} moves {a} and {c} to vCPU 1; dom0 raises both: {a} heads vCPU 1's queue {PRIO}, {c} behind it, "
           f"while vCPU 0's control block still names {a} as its head")
    got = h.consume(GUEST, 0, 1)
    st.say(f"d{GUEST}'s vCPU 0 takes its READY and handles {got or 'nothing'}"
           + (f": it walked from the stale head {a} into vCPU 1's queue, and its next step is {c}" if got else ""))
    return Expect("ready-head-consumed", GUEST, a, vcpu=1)


@replay("xen-old-tail-linked", "xen-old-tail-linked",
        "a drained port, still its vCPU 0 queue's tail, moves to vCPU 1 and is raised there; the next event on "
        "vCPU 0's queue is linked after it, and the next on vCPU 1's overwrites that link")
def old_tail_linked(st: Stage) -> Expect:
    h = st.host
    (a, a0), (b, b0), (c, c0) = (st.backend_channel(GUEST) for _ in range(3))
    st.say(f"d{GUEST} binds ports {a}, {b} and {c} to dom0 ({a0}, {b0}, {c0}), all on vCPU 0, priority {PRIO}")
    h.send(0, 0, a0)
    got = h.consume(GUEST, 0, 16)
    st.say(f"dom0 raises {a}, d{GUEST}'s vCPU 0 handles {got}: its queue {PRIO} is empty, {a} still Xen's tail for it")
    h.bind_vcpu(GUEST, GUEST, a, 1)
    h.bind_vcpu(GUEST, GUEST, c, 1)
    st.say(f"d{GUEST} moves {a} and {c} to vCPU 1")
    with st.fault(faults.OLD_TAIL_LINKED):
        h.send(0, 0, a0)
        st.say(f"dom0 raises {a}: the head of vCPU 1's queue {PRIO}, LINKED there; "
               + ("vCPU 0's queue still names it as its tail (the bug)" if not st.fixed
                  else "vCPU 0's queue forgets it as its tail (as fixed)"))
        h.send(0, 0, b0)
        st.say(f"dom0 raises {b} on vCPU 0: "
               + (f"its old tail {a} is LINKED, so {b} is linked after it, into vCPU 1's queue, and no READY"
                  if not st.fixed else f"a new head of vCPU 0's queue {PRIO}, READY set"))
        h.send(0, 0, c0)
        st.say(f"dom0 raises {c} on vCPU 1: linked after the tail {a}"
               + (f", whose LINK to {b} it overwrites" if not st.fixed else ""))
    got1, got0 = h.consume(GUEST, 1, 16), h.consume(GUEST, 0, 16)
    st.say(f"d{GUEST}'s vCPU 1 handles {got1}, vCPU 0 handles {got0 or 'nothing'}"
           + (f": {b} stays LINKED and PENDING, reached from no head" if b not in got0 + got1 else ""))
    return Expect("linked-unreachable", GUEST, b)


@replay("xen-pending-unqueued", "xen-pending-unqueued",
        "a domU moves a backend's port to its vCPU 1 before that vCPU is up (no control block yet: what Xen's fix "
        "calls a misbehaving guest); the backend raises it; then the domU brings vCPU 1 up", online=1,
        real_xen=("g-fifo-event-to-vcpu-without-control-block",))
def pending_unqueued(st: Stage) -> Expect:
    h = st.host
    a, a0 = st.backend_channel(GUEST)
    h.bind_vcpu(GUEST, GUEST, a, 1)
    st.say(f"d{GUEST} binds port {a} to dom0 ({a0}) and moves it to vCPU 1, which was never brought up and has "
           f"no control block (a guest misbehaving, as Xen's fix puts it)")
    with st.fault(faults.PENDING_UNQUEUED):
        h.send(0, 0, a0)
    st.say(f"dom0 raises {a}: Xen drops it, vCPU 1 has no control block to queue it on, "
           + ("having set PENDING first (the bug)" if not st.fixed else "PENDING left clear (as fixed)"))
    for line in h.cpu_up(GUEST, GUEST, 1):
        st.say(f"d{GUEST} brings vCPU 1 up: {line}")
    got = h.consume(GUEST, 1, 16)
    st.say(f"d{GUEST}'s vCPU 1 handles {got or 'nothing'}"
           + (f": {a} is PENDING and unmasked, on no queue" if not st.fixed else ""))
    return Expect("pending-not-queued", GUEST, a, samples=2)


@replay("xen-no-page-dropped", "xen-no-page-dropped",
        "the toolstack binds a port of a booting domU (as for xenstore); the domU's kernel moves to FIFO; the "
        "port's event arrives before the kernel's first EVTCHNOP_expand_array, then the kernel adds the page and "
        "unmasks the port", bare=(GUEST,), real_xen=("g-fifo-deferred-until-expand",))
def no_page_dropped(st: Stage) -> Expect:
    h = st.host
    mine = h.alloc_unbound(0, GUEST, 0)
    theirs = h.bind_interdomain(0, 0, GUEST, mine)
    st.say(f"the toolstack (dom0) allocates port {mine} in d{GUEST} and binds its end to it ({theirs}); d{GUEST}'s "
           "kernel has not booted yet: 2-level, nothing masked")
    for v in range(2):  # (the replay's two vCPUs)
        h.init_control(GUEST, GUEST, v, CONTROL_BLOCK_GFN + v, 0)
    st.say(f"d{GUEST}'s kernel registers a control block per vCPU (EVTCHNOP_init_control): FIFO, no event-array "
           "page yet")
    with st.fault(faults.NO_PAGE_DROPPED):
        h.send(0, 0, theirs)
    st.say(f"dom0 raises {mine}: it has no event word yet; Xen "
           + ("drops the event (the bug)" if not st.fixed else "keeps it pending for when its page comes (as fixed)"))
    h.expand_array(GUEST, GUEST, EVENT_ARRAY_GFN)
    st.say(f"d{GUEST}'s kernel adds the first event-array page (EVTCHNOP_expand_array), every word MASKED"
           + (f"; Xen raises {mine} again: PENDING" if st.fixed else ""))
    h.evtchn_unmask(GUEST, GUEST, mine)
    got = h.consume(GUEST, 0, 16)
    st.say(f"d{GUEST} binds its IRQ to {mine} and unmasks it (EVTCHNOP_unmask); vCPU 0 handles {got or 'nothing'}"
           + (": the event is gone, and whoever sent it waits for an answer" if not got else ""))
    return Expect("raised-not-delivered", GUEST, mine, samples=2)
