"""The paths users call, at the layer they call them: the public API (``xenevt.open("sim")``'s Host), each figure
beside a reference measured in the same run (interleaved blocks, so both sample the same mix of the machine's
load), and issue 28's goal.  A figure printer, not a test: it asserts nothing.

- notify (``host.notify``) on one port, round-robin over 2,000 ports, and once each over 20,000 freshly bound
  ports, against ``os.eventfd`` writes (goal >= 0.5x each);
- status (``host.status``) against the same eventfd writes;
- the events iterator (``host.events``) against the bench's consume path (the simulator's upcall loop called
  directly, ``SimHost.consume`` in batches of 256), each port handed to the same consumer (a drained deque):
  deliveries per second (goal >= 0.9x);
- a notify -> wait round trip in one process (``host.notify_wait``, one call per event) against a notify then
  an events batch (two calls per event);
- doctor and dump of a host of 200 domains and 20,000 channels against listing every domain's ports
  (``host.ports``) of the same host; doctor's goal is 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_host import spread_host  # noqa: E402

import xenevt  # noqa: E402
from xenevt.sim.host import SimHost, create_host  # noqa: E402
from xenevt.sim.statefile import MAX_DOMAINS  # noqa: E402

TOKEN = (1).to_bytes(8, "little")


def per_second(fn, n: int) -> float:
    """Calls of ``fn(i)`` for i in range(n) per second."""
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def against_eventfd(label: str, fn, n: int, blocks: int, goal: float | None, efd: int, fresh=None) -> None:
    """Median of ``blocks`` interleaved blocks of ``n`` calls each, beside eventfd writes; ``fresh()`` before each
    block makes what it needs (ports never notified), untimed."""
    mine, ref = [], []
    for _ in range(blocks):
        if fresh is not None:
            fresh()
        mine.append(per_second(fn, n))
        ref.append(per_second(lambda _i: os.write(efd, TOKEN), n))
    m, r = statistics.median(mine), statistics.median(ref)
    met = "" if goal is None else f" (goal >= {goal}x: {'met' if m / r >= goal else 'NOT met'})"
    print(f"  {label:44s} {m / 1e3:8.1f} k/s   eventfd {r / 1e3:8.1f} k/s   {m / r:.2f}x{met}")


def channels(state: str, n: int) -> list[int]:
    """``n`` new interdomain channels dom1 -> dom0: dom1's ports."""
    with SimHost(state) as h:
        out = []
        for _ in range(n):
            p = h.alloc_unbound(1, 1, 0)
            h.bind_interdomain(0, 0, 1, p)
            out.append(p)
        return out


def notify_figures(state: str, fresh_n: int, blocks: int) -> None:
    create_host(state, nr_domains=2, nr_vcpus=1, max_ports_dom0=1 << 17, max_ports_domu=1 << 17, force=True)
    ports = channels(state, 2000)
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    print(f"notify through the public API (xenevt.open('sim').notify, dom1 -> dom0; median of {blocks} blocks; "
          "the eventfd counter is read empty between blocks):")
    try:
        with xenevt.open("sim", state) as host:
            notify, one = host.notify, ports[0]
            against_eventfd("one port", lambda _i: notify(1, one), 20000, blocks, 0.5, efd)
            os.read(efd, 8)
            against_eventfd(f"round-robin over {len(ports):,} ports", lambda i: notify(1, ports[i % len(ports)]),
                            20000, blocks, 0.5, efd)
            os.read(efd, 8)
            # the fresh shape: each block its own ports, bound by another process-less host, never notified here
            block = max(1, fresh_n // blocks)
            made: list[int] = []

            def more() -> None:
                made[:] = channels(state, block)
                host.refresh()

            against_eventfd(f"once each over {block * blocks:,} fresh ports ({block:,} a block)",
                            lambda i: notify(1, made[i]), block, blocks, 0.5, efd, fresh=more)
            os.read(efd, 8)
            st = host.status
            against_eventfd("status (host.status of one port)", lambda _i: st(0, one), 20000, blocks, None, efd)
    finally:
        os.close(efd)


def events_figures(state: str, n: int, blocks: int) -> None:
    """Deliveries per second: the events iterator against the simulator's upcall loop called directly."""
    create_host(state, nr_domains=2, nr_vcpus=1, max_ports_dom0=1 << 17, max_ports_domu=1 << 17, force=True)
    ports = channels(state, n)
    mine, ref = [], []
    with xenevt.open("sim", state) as host, SimHost(state) as sim:
        list(host.events(0, timeout=0))  # (the binds left dom0's ports pending: drained, and the vCPU claimed)
        sim.claim_vcpu(0, 0)
        for _ in range(blocks):
            for p in ports:
                sim.send(1, 1, p)
            t0 = time.perf_counter()
            ev = host.events(0, count=n, timeout=0)
            deque(ev, maxlen=0)  # (each port handed out, taken by the fastest consumer Python has)
            mine.append(ev.got / (time.perf_counter() - t0))
            for p in ports:
                sim.send(1, 1, p)
            t0 = time.perf_counter()
            got = 0
            while got < n:  # (each batch's ports handed to the same consumer)
                batch = sim.consume(0, 0, 256, 0)
                deque(batch, maxlen=0)
                got += len(batch)
            ref.append(got / (time.perf_counter() - t0))
    m, r = statistics.median(mine), statistics.median(ref)
    print(f"the events iterator (host.events) on {n:,} pending ports, median of {blocks}:")
    print(f"  {'host.events':44s} {m / 1e6:8.2f} M/s   SimHost.consume in 256s {r / 1e6:8.2f} M/s   {m / r:.2f}x "
          f"(goal >= 0.9x: {'met' if m / r >= 0.9 else 'NOT met'})")


def round_trip_figures(state: str, n: int, blocks: int) -> None:
    """One process, dom1 notifies and dom0 takes the event: notify_wait against notify + an events batch."""
    create_host(state, nr_domains=2, nr_vcpus=1, force=True)
    (p,) = channels(state, 1)
    mine, ref = [], []
    with xenevt.open("sim", state) as host:
        list(host.events(0, timeout=0))
        dom0_port = host.ports(1)[-1].remote_port
        for _ in range(blocks):
            ref.append(per_second(lambda _i: (host.notify(1, p), list(host.events(0, count=1, timeout=1))), n))
            mine.append(per_second(lambda _i: host.notify_wait(1, p, 0, timeout=1), n))
        assert host.notify_wait(1, p, 0, timeout=1) == [dom0_port]
    m, r = statistics.median(mine), statistics.median(ref)
    print(f"notify -> deliver in one process (dom1 -> dom0), median of {blocks} blocks of {n:,}:")
    print(f"  {'host.notify_wait (one call per event)':44s} {m / 1e3:8.1f} k/s   notify + events {r / 1e3:8.1f} k/s"
          f"   {m / r:.2f}x")


def host_figures(state: str, domains: int, nr: int, reps: int) -> None:
    made = spread_host(state, domains, nr)
    with xenevt.open("sim", state) as host:
        doms = host.domains()

        def timed(fn) -> tuple[float, float]:
            """Median wall and CPU seconds (on a busy machine the CPU time is what the call itself costs)."""
            wall, cpu = [], []
            for _ in range(reps):
                host.refresh()
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            return statistics.median(wall), statistics.median(cpu)

        ref = timed(lambda: [host.ports(d) for d in doms])
        doc = timed(host.doctor)
        dump = timed(lambda: host.dump(xenevt.Source.live(all_domains=True)))
    print(f"a host of {len(doms)} domains, {made:,} channels (median of {reps}, in process, a fresh view each; "
          "wall and CPU seconds):")
    print(f"  {'reference: host.ports of every domain':44s} {ref[0]:6.2f} s  CPU {ref[1]:6.2f} s")
    print(f"  {'host.doctor()':44s} {doc[0]:6.2f} s  CPU {doc[1]:6.2f} s   {doc[1] / ref[1]:5.1f}x the listing's "
          f"CPU (goal < 0.5 s: {'met' if doc[0] < 0.5 else 'NOT met'}, by CPU {'met' if doc[1] < 0.5 else 'NOT met'})")
    print(f"  {'host.dump(Source.live(all_domains=True))':44s} {dump[0]:6.2f} s  CPU {dump[1]:6.2f} s   "
          f"{dump[1] / ref[1]:5.1f}x the listing's CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer and smaller blocks (a few seconds)")
    args = ap.parse_args()
    blocks = 3 if args.quick else 7
    with tempfile.TemporaryDirectory(prefix="xenevt-bench-api-") as tmp:
        notify_figures(os.path.join(tmp, "n"), 2000 if args.quick else 20000, blocks)
        events_figures(os.path.join(tmp, "e"), 2000 if args.quick else 20000, blocks)
        round_trip_figures(os.path.join(tmp, "r"), 2000 if args.quick else 20000, blocks)
        host_figures(os.path.join(tmp, "h"), min(200, MAX_DOMAINS), 20000, 1 if args.quick else 3)
    print("(figures from one run: compare the ratios, not the rates, across machines and loads)")


if __name__ == "__main__":
    main()
