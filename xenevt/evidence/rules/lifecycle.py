"""Rules on vCPUs going down and up: events left on the queues of a vCPU that is down.

Xen keeps a down vCPU's control block and queues (VCPUOP_down), and links events for it there; no upcall handler
runs on it until it comes back.  A kernel taking a CPU down first moves its ports away and then drains its queues
(Linux's evtchn_fifo_percpu_deinit), so events found queued on a down vCPU were bound to it behind the kernel's
back, or raised after it went down on a port that could not move (an IPI, a per-vCPU VIRQ).
"""

from __future__ import annotations

from .registry import Needs, Rule, Subject, check


@check(Rule("queued-on-down-vcpu", ("warning",), "Events LINKED on the queues of a vCPU that is down: nobody "
            "consumes them until it comes up, and each such port is busy (Xen will not reuse it once closed)."),
       needs=Needs.QUEUES)
def queued_on_down_vcpu(s: Subject) -> None:
    queues = s.queues
    assert queues is not None  # (Needs.QUEUES)
    d = s.dom.domain
    for qu in queues.queues:
        v = s.dom.vcpus.get(qu.facts.vcpu)
        if v is None or v.state != "down" or not qu.chain:
            continue
        n, vcpu = len(qu.chain), qu.facts.vcpu
        chain = " -> ".join(map(str, qu.chain))
        s.add("warning", "queued-on-down-vcpu", list(qu.chain),
              f"{n} event(s) queued on vCPU {vcpu}, which is down (priority {qu.facts.priority})",
              f"vCPU {vcpu} is down (VCPUOP_down: its control block kept); its queue {qu.facts.priority} holds "
              f"{chain}, LINKED",
              f"no upcall handler runs on a down vCPU: the events wait until it comes up (`xenevt sim vcpu up {d} "
              f"{vcpu}`; in the guest `echo 1 > /sys/devices/system/cpu/cpu{vcpu}/online`).  A kernel that takes a "
              "CPU down moves its ports first and drains its queues, so these were bound to it behind the "
              "kernel's back, or closed or moved by a kernel that did not drain them (Linux before "
              "fcdf31a7c162).  Moving a port (`xenevt bind-vcpu`) does not move an event already queued: its word "
              "stays LINKED here and each later event on it only finds PENDING set, until this vCPU comes up.  "
              "While LINKED a closed port stays busy and Xen will not give it out again.",
              vcpu=vcpu)
