"""A guided scenario on a fresh simulated host (what README's first command runs).

Two domains, an interdomain channel, events at two priorities, a masked
port, and a consumer: each step prints what Xen did and the FIFO queues as
they are in the shared pages.  Everything shown is read back from the host.
"""

from __future__ import annotations

import shutil
import sys
import tempfile

from .. import abi
from ..engine.codes import Walk
from .host import SimHost, create_host


def show_queues(host: SimHost, domid: int, out=sys.stdout) -> None:
    dom = host.domain(domid, "dump")
    mem = dom.mem
    starts = [mem.guest(v)[1 + p] for v in range(mem.nr_vcpus) for p in range(16)]
    results, chain = dom.engine.walk(starts)
    for v in range(mem.nr_vcpus):
        cb = mem.control_block(v)
        ready = [p for p in range(16) if cb is not None and cb[0] >> p & 1]
        print(f"    dom{domid} vCPU{v}: READY {ready or '-'}", file=out)
        for p in range(16):
            head, start, count, status, bad, _ = results[v * 16 + p]
            if status == Walk.EMPTY or (status == Walk.STALE and not ready.count(p)):
                continue
            ports = " -> ".join(str(x) for x in chain[start : start + count]) or "(empty)"
            print(f"      queue {p:2d}: {ports}  [{Walk(status).name.lower()}]", file=out)
    for port in range(1, mem.nr_ports):
        word = mem.word(port)
        if word & (abi.WORD_PENDING | abi.WORD_LINKED | abi.WORD_BUSY):
            print(f"      port {port}: {abi.word_flags(word)} link={abi.word_link(word)}", file=out)


def run(out=sys.stdout) -> int:
    state = tempfile.mkdtemp(prefix="xenevt-demo-")
    try:
        create_host(state, nr_domains=2, nr_vcpus=1)
        with SimHost(state) as h:
            def step(title: str, say: str) -> None:
                print(f"\n== {title}\n   {say}", file=out)

            step("boot", "dom0 and dom1 registered a control block per vCPU and one event-array page.")
            p1 = h.alloc_unbound(1, 1, 0)
            step("alloc_unbound", f"dom1 allocated port {p1}, waiting for dom0.")
            p0 = h.bind_interdomain(0, 0, 1, p1)
            step("bind_interdomain", f"dom0 bound port {p0} to dom1:{p1}; Xen leaves the new local port pending.")
            show_queues(h, 0, out)
            print(f"   dom0 consumes: {h.consume(0, 0, timeout=0)}", file=out)
            q1 = h.alloc_unbound(1, 1, 0)
            q0 = h.bind_interdomain(0, 0, 1, q1)
            h.consume(0, 0, timeout=0)
            h.set_priority(0, 0, q0, 2)
            step("priorities", f"dom0 port {q0} now has priority 2; port {p0} keeps the default 7.")
            for port in (p1, q1, p1):
                r = h.send(1, 1, port)
                print(f"   dom1 notifies port {port} -> dom0 port {r.target_port}: {r.outcome}", file=out)
            show_queues(h, 0, out)
            got = h.consume(0, 0, timeout=0)
            step("consume", f"dom0's upcall handler delivered {got}: priority 2 first, the repeat coalesced.")
            h.mask(0, 0, p0)
            r = h.send(1, 1, p1)
            step("masked", f"dom0 masked port {p0}; dom1's notify left it {r.outcome}: not on any queue.")
            show_queues(h, 0, out)
            print(f"   dom0 consumes: {h.consume(0, 0, timeout=0)}", file=out)
            h.unmask(0, 0, p0)
            step("unmask", f"port {p0} was pending, so the guest asked Xen to unmask: Xen linked it.")
            show_queues(h, 0, out)
            print(f"   dom0 consumes: {h.consume(0, 0, timeout=0)}", file=out)
            h.close_port(0, 0, p0)
            st = h.status(0, 1, p1)
            step("close", f"dom0 closed port {p0}; dom1's port {p1} is {st.state} again (remote dom{st.remote_domain}).")
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
