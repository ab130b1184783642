"""A guided scenario on a fresh simulated host (what README's first command runs).

Two domains, an interdomain channel, events at two priorities, a masked
port, and a consumer: each step says what Xen did and shows dom0's FIFO
queues with the same view as ``xenevt dump``.  Everything shown is read back
from the shared pages; the host lives in a temporary directory.
"""

from __future__ import annotations

import shutil
import sys
import tempfile

from rich.console import Console
from rich.text import Text

from ..dump import build_dump
from ..dump.render import render_dump
from .host import SimHost, create_host


def show(host: SimHost, domid: int, out: Console) -> None:
    dom = host.domain(domid, "dump")
    channels = {st.port: st for st in host.list_ports(0, domid)}
    render_dump(build_dump(dom.mem, domid, "sim", channels=channels, max_ports=dom.mem.nr_chans), out)


def run(out=None) -> int:
    """Print the scenario to ``out`` (a rich Console or a text file; default stdout)."""
    if not isinstance(out, Console):
        out = Console(file=out, markup=False, highlight=False, soft_wrap=True)
    state = tempfile.mkdtemp(prefix="xenevt-demo-")

    def step(title: str, say: str) -> None:
        out.print()
        out.print(Text(f"== {title}", style="bold cyan"))
        out.print(f"   {say}")

    try:
        create_host(state, nr_domains=2, nr_vcpus=1)
        with SimHost(state) as h:
            step("boot", "dom0 and dom1 each registered a control block for their vCPU and one event-array page "
                         "(1024 words, all MASKED until a port is bound).")
            p1 = h.alloc_unbound(1, 1, 0)
            step("alloc_unbound", f"dom1 allocated port {p1}, unbound, waiting for dom0.")
            p0 = h.bind_interdomain(0, 0, 1, p1)
            step("bind_interdomain", f"dom0 bound port {p0} to dom1:{p1}. Xen sets the new local port pending, "
                                     "so dom0's queue 7 holds it:")
            show(h, 0, out)
            out.print(f"   dom0's upcall handler consumes: {h.consume(0, 0, timeout=0)}")
            q1 = h.alloc_unbound(1, 1, 0)
            q0 = h.bind_interdomain(0, 0, 1, q1)
            h.consume(0, 0, timeout=0)
            h.set_priority(0, 0, q0, 2)
            step("priorities", f"a second channel dom0:{q0} <-> dom1:{q1}; dom0 gives port {q0} priority 2, "
                               f"port {p0} keeps the default 7.")
            for port in (p1, q1, p1):
                r = h.send(1, 1, port)
                out.print(f"   dom1 notifies its port {port} -> dom0 port {r.target_port}: {r.outcome}")
            show(h, 0, out)
            got = h.consume(0, 0, timeout=0)
            step("consume", f"dom0's upcall handler delivered {got}: priority 2 first; the repeated notify "
                            "coalesced into the pending event.")
            h.mask(0, 0, p0)
            r = h.send(1, 1, p1)
            step("masked", f"dom0 masked port {p0}; dom1's notify left it {r.outcome}: PENDING, but on no queue.")
            show(h, 0, out)
            out.print(f"   dom0's upcall handler consumes: {h.consume(0, 0, timeout=0)} (nothing: the port is masked)")
            h.unmask(0, 0, p0)
            step("unmask", f"port {p0} was pending, so the guest asked Xen to unmask it (EVTCHNOP_unmask): "
                           "Xen linked it and raised the upcall.")
            show(h, 0, out)
            out.print(f"   dom0's upcall handler consumes: {h.consume(0, 0, timeout=0)}")
            h.close_port(0, 0, p0)
            st = h.status(0, 1, p1)
            step("close", f"dom0 closed port {p0}; dom1's port {p1} is {st.state} again, waiting for "
                          f"domain {st.remote_domain}.")
            out.print()
            out.print("Try it on your own simulated host: xenevt sim init; xenevt bind unbound 1; xenevt list; "
                      "xenevt dump (xenevt --help lists every command).")
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
