"""Rules on a port's pending and mask bits, and on where a 2-level guest's upcall will look for it.

An event waits when its port is masked (the guest must unmask it), or is pending and unmasked but not where
the guest looks: not LINKED on any FIFO queue, or, on 2-level, its selector bit or the vCPU's upcall flag
clear.  One sample cannot tell a guest mid-upcall from a lost write, so that is a warning until an earlier
sample shows it already so.
"""

from __future__ import annotations

from .common import delivered, remote, unseen
from .registry import Needs, Rule, Subject, check


@check(Rule("masked-ipi", ("info",), "A vCPU's only pending, masked IPI: Linux's PV-spinlock kicker, normal."),
       Rule("masked-busy", ("info",), "Pending and masked, yet events were delivered on it since the earlier "
            "sample: a busy lateeoi port, not a stuck one."),
       Rule("pending-masked", ("warning", "error"), "A port pending but masked: its event waits for an unmask "
            "(an error when already so in the earlier sample)."),
       needs=Needs.EARLIER)
def pending_masked(s: Subject) -> None:
    ordered, dom, prev, age = s.ordered, s.dom, s.prev, s.age
    # Linux's PV spinlocks bind one IPI per vCPU, keep it masked for good and wait on it with SCHEDOP_poll, so it
    # rests pending and masked (real Xen, xen-ci: dom0's ports 2 and 12, a 2-vCPU domU's 4 and 16)
    kickers: dict[int, list[int]] = {}
    for p in dom.ports.values():
        if p.state == "ipi" and p.pending and p.masked:
            kickers.setdefault(p.vcpu if p.vcpu is not None else -1, []).append(p.port)
    for p in ordered:
        if not (p.pending and p.masked) or p.state in ("closed", "reserved"):
            continue
        if p.state == "ipi" and len(kickers.get(p.vcpu if p.vcpu is not None else -1, ())) == 1:
            s.add("info", "masked-ipi", [p.port],
                  f"port {p.port} (an IPI of vCPU {p.vcpu}) is pending but masked: most likely Linux's PV-spinlock "
                  "kicker", f"PENDING and MASKED (ipi, the only such IPI of vCPU {p.vcpu})",
                  "Linux binds one IPI per vCPU for its paravirtual spinlocks, keeps it masked and waits on it with "
                  "SCHEDOP_poll, so a pending bit there is normal. If the guest booted with nopvspin, treat it as "
                  "pending-masked.", vcpu=p.vcpu)
            continue
        before = prev.ports.get(p.port) if prev is not None else None
        still = before is not None and before.pending and before.masked
        evidence = f"PENDING and MASKED ({p.state}{remote(p)})"
        # real Xen, xen-ci: netback's port under a flood rests masked between its delayed EOIs, so a sample may
        # find it masked in one sample or both while events flow
        flowed = delivered(s, p.port) if prev is not None else None
        if flowed:
            both = "in both samples" if still else "now"
            s.add("info", "masked-busy", [p.port],
                  f"port {p.port} is pending and masked {both}, yet {flowed:,} events were delivered on it since "
                  "the earlier sample", evidence + (f"; {age:.0f} s earlier too" if still else "") +
                  f"; {flowed:,} events handled in the {age:.0f} s between the samples",
                  "Not stuck: Linux keeps a port masked while its handler runs and, for a lateeoi device (netback, "
                  "blkback, /dev/xen/evtchn users), until its EOI, which it holds back while the other end "
                  "notifies with nothing to do. A port masked for good delivers nothing between samples.")
            continue
        if still:
            evidence += f"; already so {age:.0f} s earlier"
        s.add("error" if still else "warning", "pending-masked", [p.port],
              f"port {p.port} is pending but masked" + (f" for at least {age:.0f} s" if still else ""), evidence,
              "The guest masked the port and has not unmasked it, so the event waits: a driver that stopped "
              "servicing it (check its row in the guest's /proc/interrupts) or a lost unmask; "
              f"`xenevt unmask {p.port}` shows whether events flow again.")


@check(Rule("pending-not-queued", ("warning", "error"), "Pending and unmasked, but not LINKED on any queue "
            "(FIFO) or not under a set selector bit and upcall flag (2-level): nothing wakes the guest for it."),
       needs=Needs.EARLIER)
def pending_not_queued(s: Subject) -> None:
    ordered, dom, prev, age = s.ordered, s.dom, s.prev, s.age
    two = dom.abi == "2-level"
    for p in ordered:
        if not p.pending or p.masked is not False or p.state in ("closed", "reserved"):
            continue
        if two:
            kind = unseen(dom, p)
        elif p.linked is False:
            kind = "not LINKED on any queue"
        else:
            continue
        if not kind:
            continue
        before = prev.ports.get(p.port) if prev is not None else None
        still = before is not None and prev is not None and before.pending and before.masked is False and bool(
            unseen(prev, before) if two else before.linked is False)
        # Linux clears LINKED before it handles the port (FIFO), or the upcall flag and then the selector
        # before it scans (2-level): a guest mid-upcall shows this for microseconds
        s.add("error" if still else "warning", "pending-not-queued", [p.port],
              f"port {p.port} is pending and unmasked but {kind}",
              f"PENDING set, MASKED clear, {kind}" + (f"; already so {age:.0f} s earlier" if still else
                                                       " (one sample: a guest mid-upcall can show this for "
                                                       "microseconds; confirm with --since)"),
              ADVICE_UNSEEN_2L if two else
              "An event that will never be delivered: Xen set PENDING but did not queue it (a lost link), so "
              "nothing wakes the guest for it; raising it again (a notify, or mask+unmask) requeues it. Report the "
              "Xen and guest kernel versions.", vcpu=p.vcpu if two else None)


ADVICE_UNSEEN_2L = (
    "An event the guest will not look for: Linux's 2-level upcall runs only while evtchn_upcall_pending is set "
    "and scans only the words its evtchn_pending_sel names; Xen sets both when it raises an unmasked port, so "
    "a clear one is a lost write. The port waits until another event in the same word reaches that vCPU; "
    "mask+unmask (EVTCHNOP_unmask raises it again) delivers it. Report the Xen and guest kernel versions.")


@check(Rule("selector-without-pending", ("info",), "2-level: a selector bit set with no pending, unmasked port "
            "of its vCPU under it; harmless."))
def selector_idle(s: Subject) -> None:
    """2-level: a selector bit with no pending, unmasked port of this vCPU under it costs the next upcall one
    word's scan and nothing else (Xen leaves it when the port is masked or cleared before the upcall)."""
    dom = s.dom
    if dom.abi != "2-level":
        return
    live: dict[int, set[int]] = {}  # word -> vCPUs with a pending, unmasked port there (-1: a port's vCPU unknown)
    for p in dom.ports.values():
        if p.pending and p.masked is False and p.state not in ("closed", "reserved"):
            live.setdefault(p.port // 64, set()).add(-1 if p.vcpu is None else p.vcpu)
    for v in sorted(dom.vcpus.values(), key=lambda x: x.vcpu):
        idle = [w for w in v.selector_words or [] if not live.get(w, set()) & {v.vcpu, -1}]
        if idle:
            words = ", ".join(map(str, idle))
            s.add("info", "selector-without-pending", [],
                  f"vCPU {v.vcpu}: selector bit(s) {words} set with no pending, unmasked port of this vCPU under "
                  "them", f"evtchn_pending_sel words {words}; ports {idle[0] * 64}..{idle[0] * 64 + 63}"
                  f"{' and the other words' if len(idle) > 1 else ''}: none pending and unmasked on vCPU {v.vcpu}",
                  "Harmless: the next upcall scans those words and finds nothing. Xen leaves a selector bit set when "
                  "the port under it was masked or its event cleared before the guest's upcall ran.", vcpu=v.vcpu)



@check(Rule("delivered-never-raised", ("warning",), "More events delivered on a port's binding than Xen raised on it: "
            "a pending bit left over from the port's previous channel."))
def delivered_never_raised(s: Subject) -> None:
    """Where the source counts both per binding (the simulator: counted from zero at each bind), a raise may merge
    into one delivery but never the other way: an extra delivery is a pending bit nobody raised on this binding."""
    for p in s.ordered:
        if p.state in ("closed", "reserved", "unknown"):
            continue
        c = s.counters.get(p.port)
        if c is None or c.raised is None or c.handled is None or c.handled <= c.raised:
            continue
        s.add("warning", "delivered-never-raised", [p.port],
              f"port {p.port}: {c.handled} event(s) delivered, {c.raised} raised on this binding",
              f"{p.state}{remote(p)}; raised {c.raised}, delivered {c.handled} since it was bound",
              "The guest handled an event no one sent on this channel: a pending bit left over from the port's "
              "previous channel (Xen before 120785c177, 2008, closed a port without clearing it, so the next "
              "binding of the number got a stray event), or a guest setting pending bits itself. A handler that "
              "trusts every event (an IPI, a VIRQ) acted on nothing.", vcpu=p.vcpu if s.dom.abi == "2-level" else None)
