"""Notify -> wake benchmark: the simulator's event delivery across processes vs the kernel's own.

Two processes play ping-pong, each sleeping until the other's event arrives:
- over the simulated host: each side consumes its domain's FIFO queue (futex
  sleep on the shared upcall word) and answers with EVTCHNOP_send;
- over a plain ``os.eventfd`` pair and over a pipe pair, the cheapest
  cross-process wake-ups the kernel offers, measured in the same run.
One-way latency is half a round trip (median and p99).  Also notifies per
second from one process (send in a loop, events coalescing as Xen's do) vs
eventfd writes per second; EVTCHNOP_status per second against the same
eventfd writes (a system call each from Python: what a status on real Xen,
one privcmd ioctl, costs at the least) and against its Python reference;
and, where Xen's headers are installed (libxen-dev), a C program's notify -> poll ->
pending -> unmask round trip on the simulator's libxenevtchn
(tests/c/evtchn_pingpong.c) vs a C eventfd ping-pong (bench/eventfd_pingpong.c),
both compiled in the same run.  Each figure is printed as a ratio against its
reference beside issue 15's goal.  A figure printer, not a test: it asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from xenevt.sim.host import SimHost, create_host


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(rtts: list[float]) -> tuple[float, float]:
    """(median, p99) one-way latency in microseconds."""
    return statistics.median(rtts) / 2 * 1e6, percentile(rtts, 0.99) / 2 * 1e6


def fd_pingpong(kind: str, rounds: int, warmup: int) -> list[float]:
    if kind == "eventfd":
        a_r = a_w = os.eventfd(0)
        b_r = b_w = os.eventfd(0)
        size, token = 8, (1).to_bytes(8, "little")
    else:
        a_r, a_w = os.pipe()
        b_r, b_w = os.pipe()
        size, token = 1, b"x"
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(rounds + warmup):
                os.read(a_r, size)
                os.write(b_w, token)
        finally:
            os._exit(0)
    rtts = []
    for i in range(rounds + warmup):
        t0 = time.perf_counter()
        os.write(a_w, token)
        os.read(b_r, size)
        if i >= warmup:
            rtts.append(time.perf_counter() - t0)
    os.waitpid(pid, 0)
    for fd in {a_r, a_w, b_r, b_w}:
        os.close(fd)
    return rtts


def sim_pingpong(state: str, rounds: int, warmup: int) -> list[float]:
    with SimHost(state) as h:
        p1 = h.alloc_unbound(1, 1, 0)
        p0 = h.bind_interdomain(0, 0, 1, p1)
    pid = os.fork()
    if pid == 0:  # dom1's guest: wait for the event, answer it
        try:
            with SimHost(state) as h:
                h.claim_vcpu(1, 0)
                done = 0
                while done < rounds + warmup:
                    for _ in h.consume(1, 0, timeout=10):
                        h.send(1, 1, p1)
                        done += 1
        finally:
            os._exit(0)
    rtts = []
    with SimHost(state) as h:
        h.claim_vcpu(0, 0)
        h.consume(0, 0, timeout=0)  # the bind left p0 pending
        for i in range(rounds + warmup):
            t0 = time.perf_counter()
            h.send(0, 0, p0)
            got = h.consume(0, 0, timeout=10)
            if got != [p0]:
                raise SystemExit(f"sim ping-pong: expected [{p0}], got {got}")
            if i >= warmup:
                rtts.append(time.perf_counter() - t0)
    os.waitpid(pid, 0)
    return rtts


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def c_round_trips(rounds: int) -> tuple[float, float, float] | None:
    """(sim C program round trip µs, C eventfd ping-pong mean µs, its median µs), or None without xenevtchn.h."""
    if not os.path.exists("/usr/include/xenevtchn.h"):
        return None
    from xenevt.sim.simlib import libpath

    lib = libpath()
    work = tempfile.mkdtemp(prefix="xenevt-bench-c-")
    try:
        cc = os.environ.get("CC", "cc")
        prog, ref = os.path.join(work, "pingpong"), os.path.join(work, "eventfd_pingpong")
        subprocess.run([cc, "-O2", os.path.join(ROOT, "tests", "c", "evtchn_pingpong.c"), "-o", prog, f"-L{lib}",
                        "-lxenevtchn"], check=True)
        subprocess.run([cc, "-O2", os.path.join(HERE, "eventfd_pingpong.c"), "-o", ref], check=True)
        state = os.path.join(work, "host")
        create_host(state, nr_domains=1, nr_vcpus=1)
        env = dict(os.environ, XENEVT_STATE=state, LD_LIBRARY_PATH=lib)

        def run(n: int) -> float:
            t0 = time.perf_counter()
            subprocess.run([prog, str(n)], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.perf_counter() - t0

        small = min(run(10) for _ in range(3))  # the process start and the embedded Python's, taken off
        big = min(run(rounds) for _ in range(3))
        sim = (big - small) / (2 * (rounds - 10)) * 1e6  # each loop of the program is two round trips
        out = subprocess.run([ref, str(rounds)], check=True, capture_output=True, text=True).stdout.split()
        return sim, int(out[0]) / 1e3, int(out[1]) / 1e3
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rate(fn, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(200):
            fn()
        n += 200
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a few seconds)")
    args = ap.parse_args()
    rounds, warmup, secs = (300, 30, 0.3) if args.quick else (3000, 200, 2.0)
    state = tempfile.mkdtemp(prefix="xenevt-bench-")
    try:
        create_host(state, nr_domains=2, nr_vcpus=1, max_ports_dom0=4096, max_ports_domu=4096)
        # interleaved blocks: this machine's wake-up cost swings with CPU idle states, so every
        # method samples the same mix of them
        samples: dict[str, list[float]] = {"eventfd": [], "pipe": [], "sim": []}
        blocks = 10
        for _ in range(blocks):
            samples["eventfd"] += fd_pingpong("eventfd", rounds // blocks, warmup)
            samples["pipe"] += fd_pingpong("pipe", rounds // blocks, warmup)
            samples["sim"] += sim_pingpong(state, rounds // blocks, warmup)
        lat = {k: summary(v) for k, v in samples.items()}
        with SimHost(state) as h:
            h.reset(0, 0)
            h.reset(1, 1)
            p1 = h.alloc_unbound(1, 1, 0)
            p0 = h.bind_interdomain(0, 0, 1, p1)
            efd = os.eventfd(0, os.EFD_NONBLOCK)
            token = (1).to_bytes(8, "little")
            # interleaved blocks, as for the latencies: both rates sample the same mix of the machine's load
            sim_rates, efd_rates, status_rates, status_py_rates = [], [], [], []
            for _ in range(blocks):
                sim_rates.append(rate(lambda: h.send(0, 0, p0), secs / blocks))
                efd_rates.append(rate(lambda: os.write(efd, token), secs / blocks))
                status_rates.append(rate(lambda: h.status(0, 0, p0), secs / blocks))
                status_py_rates.append(rate(lambda: h.reader.status_reference(0, 0, p0), secs / blocks))
            sim_rate, efd_rate = statistics.median(sim_rates), statistics.median(efd_rates)
            status_rate, status_py_rate = statistics.median(status_rates), statistics.median(status_py_rates)
            os.close(efd)
        c_figures = c_round_trips(20000 if not args.quick else 2000)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    print(f"notify -> wake across two processes, one-way latency (round trip / 2), {rounds} round trips:")
    print(f"  {'path':34s} {'median µs':>10s} {'p99 µs':>10s}")
    names = {"eventfd": "os.eventfd ping-pong (reference)", "pipe": "pipe ping-pong",
             "sim": "sim: send + FIFO consume (C, futex)"}
    for key in ("eventfd", "pipe", "sim"):
        med, p99 = lat[key]
        print(f"  {names[key]:34s} {med:10.1f} {p99:10.1f}")
    med, p99 = lat["sim"][0] / lat["eventfd"][0], lat["sim"][1] / lat["eventfd"][1]
    print(f"  sim / eventfd: median {med:.2f}x, p99 {p99:.2f}x  (goal: at most 1.2x each)")
    print(f"notifies per second from one process (SimHost.send, the sim backend's notify; median of {blocks} "
          "interleaved blocks):")
    print(f"  sim EVTCHNOP_send (C: in-file lock + engine link): {sim_rate / 1e3:10.1f} k/s")
    print(f"  os.eventfd write (reference):                      {efd_rate / 1e3:10.1f} k/s")
    print(f"  sim / eventfd: {sim_rate / efd_rate:.2f}x  (goal: at least 0.5x)")
    print(f"EVTCHNOP_status per second from one process (SimHost.status of a bound port; the same {blocks} "
          "interleaved blocks):")
    print(f"  sim EVTCHNOP_status (C: in-file lock, record, word): {status_rate / 1e3:8.1f} k/s")
    print(f"  its Python reference (Reader.status_reference):     {status_py_rate / 1e3:8.1f} k/s")
    print(f"  status / eventfd writes: {status_rate / efd_rate:.2f}x (a system call each; a status also builds a "
          f"12-field PortStatus); C / Python: {status_rate / status_py_rate:.1f}x")
    if c_figures is None:
        print("a C program's round trip on the simulator's libxenevtchn: skipped (/usr/include/xenevtchn.h missing: "
              "apt install libxen-dev)")
        return
    sim_c, ref_mean, ref_median = c_figures
    print("a C program's notify -> poll -> pending -> unmask round trip (tests/c/evtchn_pingpong.c):")
    print(f"  on the simulator's libxenevtchn (mean):       {sim_c:8.1f} µs")
    print(f"  C eventfd ping-pong (reference), mean/median: {ref_mean:8.1f} / {ref_median:.1f} µs")
    print(f"  os.eventfd ping-pong round trip (Python), median: {2 * lat['eventfd'][0]:5.1f} µs")
    print(f"  sim C / C eventfd (means): {sim_c / ref_mean:.2f}x  (goal: at most 2x); sim C / Python eventfd "
          f"round trip: {sim_c / (2 * lat['eventfd'][0]):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
