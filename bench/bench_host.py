"""Cost as the host grows, and the CLI's start: the figures issue 15 sets goals for, each beside a reference
measured in the same run.  A figure printer, not a test: it asserts nothing.

- Binding: interdomain channels bound one after another on one simulated host (alloc_unbound in the peer, then
  bind_interdomain), the cost of each thousand; the goal compares the last thousand with the first (<= 1.5x).
- list / dump --json / dump / doctor of a host with that many ports, through the CLI in a fresh process each,
  beside the time of that process doing nothing but starting (`xenevt --version`).
- `xenevt --help` and `xenevt list` on a small host beside `python -c "import click"` (goal <= 1.3x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from xenevt.sim.host import SimHost, create_host

XENEVT = [sys.executable, "-m", "xenevt"]


def timed_run(cmd: list[str], env: dict, reps: int) -> float:
    """Median wall time of ``cmd`` (a fresh process each time), output discarded."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bind_costs(state: str, channels: int, step: int) -> list[float]:
    """Seconds per ``step`` channels bound, in order."""
    create_host(state, nr_domains=2, nr_vcpus=2, max_ports_dom0=min(2 * channels + 64, 1 << 17),
                max_ports_domu=min(2 * channels + 64, 1 << 17), force=True)
    out = []
    with SimHost(state) as h:
        t0 = time.perf_counter()
        for i in range(1, channels + 1):
            p = h.alloc_unbound(0, 1, 0)
            h.bind_interdomain(0, 0, 1, p)
            if i % step == 0:
                t1 = time.perf_counter()
                out.append(t1 - t0)
                t0 = t1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=20_000, help="interdomain channels to bind (2 ports each)")
    ap.add_argument("--step", type=int, default=1_000)
    ap.add_argument("--reps", type=int, default=5, help="runs of each CLI command (the median is printed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="xenevt-bench-host-") as big, \
            tempfile.TemporaryDirectory(prefix="xenevt-bench-small-") as small:
        costs = bind_costs(big, args.channels, args.step)
        total = sum(costs)
        print(f"binding {args.channels:,} interdomain channels ({2 * args.channels:,} ports), per {args.step:,}:")
        print(f"  first {costs[0]:.2f} s ({args.step / costs[0]:,.0f}/s), last {costs[-1]:.2f} s "
              f"({args.step / costs[-1]:,.0f}/s): last / first {costs[-1] / costs[0]:.2f}x (goal <= 1.5x)")
        print(f"  all {args.channels:,} in {total:.1f} s (goal < 5 s)")
        env = dict(os.environ, XENEVT_STATE=big, XENEVT_BACKEND="sim", COLUMNS="120")
        start = timed_run(XENEVT + ["--version"], env, args.reps)
        print(f"the CLI on dom0's {args.channels:,} ports ({2 * args.channels:,} on the host; median of "
              f"{args.reps}; a bare start of the process: {start:.2f} s):")
        for label, cmd, goal in (("list", ["list"], 1.0), ("list --json", ["--json", "list"], 0.3),
                                 ("dump --json", ["--json", "dump"], 0.3), ("dump", ["dump"], 1.0),
                                 ("doctor -d 0", ["doctor", "-d", "0"], 1.0)):
            t = timed_run(XENEVT + cmd, env, args.reps)
            print(f"  {label:14s} {t:6.2f} s   (goal < {goal} s)")
        create_host(small, force=True)
        env_small = dict(env, XENEVT_STATE=small)
        click_t = timed_run([sys.executable, "-c", "import click"], env_small, args.reps * 2)
        help_t = timed_run(XENEVT + ["--help"], env_small, args.reps * 2)
        list_t = timed_run(XENEVT + ["list"], env_small, args.reps * 2)
        print(f"the CLI's start (median of {args.reps * 2}): python -c 'import click' {click_t * 1e3:.0f} ms")
        print(f"  xenevt --help {help_t * 1e3:6.0f} ms  {help_t / click_t:.2f}x (goal <= 1.3x)")
        print(f"  xenevt list   {list_t * 1e3:6.0f} ms  {list_t / click_t:.2f}x (goal <= 1.3x; a small host)")


if __name__ == "__main__":
    main()
