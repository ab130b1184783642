"""Cost as the host grows, and the CLI's start: the figures issue 15 sets goals for, each beside a reference
measured in the same run.  A figure printer, not a test: it asserts nothing.

- Binding: interdomain channels bound one after another on one simulated host (alloc_unbound in the peer, then
  bind_interdomain), the cost of each thousand; the goal compares the last thousand with the first (<= 1.5x).
- list / list --json / dump --json / dump / doctor of a host with that many ports (dom0's half, then the whole
  host), through the CLI in a fresh process each, beside the time of that process doing nothing but starting
  (`xenevt --version`); goals: under 1 s, JSON under 0.3 s.
- The same on the issue's shape: 200 domains, each domU with a vif, a console and the rest of 20,000+ channels to
  dom0 spread across them (dom0 holds 20,000+ ports, each domU about a hundred); doctor of the whole host.
- `xenevt --help` and `xenevt list` on a small host beside `python -c "import click"` (goal <= 1.3x).

Every process runs with its bytecode cached (PYTHONPYCACHEPREFIX in a temporary folder, warmed by one run first),
as an installed package has it: with PYTHONDONTWRITEBYTECODE set, each run would compile xenevt's modules again
and the figures would measure the compiler.
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
from xenevt.sim.statefile import MAX_DOMAINS

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


def spread_host(state: str, domains: int, channels: int) -> int:
    """The issue's shape: ``domains`` domains; each domU has a vif and a console served by dom0, and plain
    interdomain channels to dom0 make up ``channels`` in all, spread round-robin.  Returns the channels made."""
    create_host(state, nr_domains=domains, nr_vcpus=2, max_ports_dom0=min(channels + 4096, 1 << 17),
                max_ports_domu=1024, force=True)
    made = 0
    with SimHost(state) as h:
        for d in range(1, domains):
            made += len(h.device_add("vif", d)["ports"]) + len(h.device_add("console", d)["ports"])
        d = 0
        while made < channels:
            d = d % (domains - 1) + 1
            h.bind_interdomain(0, 0, d, h.alloc_unbound(d, d, 0))
            made += 1
    return made


def cli_figures(label: str, env: dict, reps: int, cmds) -> None:
    start = timed_run(XENEVT + ["--version"], env, reps)
    print(f"{label} (median of {reps}; a bare start of the process, `xenevt --version`: {start:.2f} s):")
    for name, cmd, goal in cmds:
        t = timed_run(XENEVT + cmd, env, reps)
        print(f"  {name:22s} {t:6.2f} s   goal < {goal} s: {'met' if t < goal else 'NOT met'}"
              f" ({t / goal:.2f}x of it; {t - start:.2f} s beyond the start)")


VIEWS = (("list", ["list"], 1.0), ("list --json", ["--json", "list"], 0.3),
         ("dump --json", ["--json", "dump"], 0.3), ("dump", ["dump"], 1.0), ("doctor -d 0", ["doctor", "-d", "0"], 1.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=20_000, help="interdomain channels to bind (2 ports each)")
    ap.add_argument("--step", type=int, default=1_000)
    ap.add_argument("--reps", type=int, default=5, help="runs of each CLI command (the median is printed)")
    ap.add_argument("--domains", type=int, default=200, help="domains of the spread host (the issue's shape)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="xenevt-bench-host-") as big, \
            tempfile.TemporaryDirectory(prefix="xenevt-bench-spread-") as spread, \
            tempfile.TemporaryDirectory(prefix="xenevt-bench-small-") as small, \
            tempfile.TemporaryDirectory(prefix="xenevt-bench-pyc-") as pyc:
        costs = bind_costs(big, args.channels, args.step)
        total = sum(costs)
        print(f"binding {args.channels:,} interdomain channels ({2 * args.channels:,} ports), per {args.step:,}:")
        print(f"  first {costs[0]:.2f} s ({args.step / costs[0]:,.0f}/s), last {costs[-1]:.2f} s "
              f"({args.step / costs[-1]:,.0f}/s): last / first {costs[-1] / costs[0]:.2f}x (goal <= 1.5x)")
        print(f"  all {args.channels:,} in {total:.1f} s (goal < 5 s)")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(XENEVT_STATE=big, XENEVT_BACKEND="sim", COLUMNS="120", PYTHONPYCACHEPREFIX=pyc)
        timed_run(XENEVT + ["doctor"], env, 1)  # compiles every module a view imports, once
        timed_run([sys.executable, "-c", "import click"], env, 1)
        cli_figures(f"the CLI on dom0's {args.channels:,} ports ({2 * args.channels:,} on the host: 2 domains)", env,
                    args.reps, VIEWS + (("doctor (whole host)", ["doctor"], 1.0),))
        domains = min(args.domains, MAX_DOMAINS)
        if domains < args.domains:
            print(f"(the simulator names {MAX_DOMAINS} domains at most, as Xen does: {domains}, not {args.domains})")
        made = spread_host(spread, domains, args.channels)
        env_spread = dict(env, XENEVT_STATE=spread)
        cli_figures(f"the issue's shape: {domains} domains, {made:,} channels (dom0 {made:,} ports, each domU "
                    f"about {made // (domains - 1)}; vif and console named)", env_spread, args.reps,
                    VIEWS + (("doctor (whole host)", ["doctor"], 1.0), ("doctor --json (whole)", ["--json", "doctor"],
                                                                       1.0)))
        create_host(small, force=True)
        with SimHost(small) as h:  # a few channels, so that list prints rows and status has a port
            for _ in range(3):
                h.bind_interdomain(0, 0, 1, h.alloc_unbound(1, 1, 0))
        env_small = dict(env, XENEVT_STATE=small)
        starts = {"import click": [sys.executable, "-c", "import click"], "xenevt --help": XENEVT + ["--help"],
                  "xenevt list": XENEVT + ["list"], "xenevt status 1": XENEVT + ["status", "1"]}
        runs = interleaved(starts, env_small, args.reps * 4)
        click_t = runs["import click"]
        print(f"the CLI's start on a small host (2 domains, 3 channels; median of {args.reps * 4}, interleaved): "
              f"python -c 'import click' {click_t * 1e3:.0f} ms")
        for name, t in runs.items():
            if name != "import click":
                print(f"  {name:16s} {t * 1e3:6.0f} ms  {t / click_t:.2f}x of import click (goal <= 1.3x: "
                      f"{'met' if t / click_t <= 1.3 else 'NOT met'})")


def interleaved(cmds: dict[str, list[str]], env: dict, reps: int) -> dict[str, float]:
    """Median wall time of each command, the commands taking turns (a machine's drift falls on all alike)."""
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(reps):
        for name, cmd in cmds.items():
            times[name].append(timed_run(cmd, env, 1))
    return {k: statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    main()
