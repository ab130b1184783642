"""The exporter's cost on the issue's shape (200 domains, 20,000+ channels), beside `xenevt --json list` of the
same host in the same run: one collection's time (a fresh `exporter --once`, and a round of a running exporter,
which has its previous round to compare with), its peak memory, and the series it makes.  A figure printer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_host import XENEVT, spread_host  # noqa: E402

from xenevt.sim.statefile import MAX_DOMAINS  # noqa: E402


def run(cmd: list[str], env: dict, reps: int) -> tuple[float, float, bytes]:
    """Median wall seconds and peak RSS (MiB) of ``cmd`` in a fresh process each time (each child's own peak, by
    wait4: RUSAGE_CHILDREN would give the largest child so far), and its last output."""
    times, peaks, out = [], [], b""
    for _ in range(reps):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert p.stdout is not None
        chunks = []
        while chunk := p.stdout.read(1 << 16):
            chunks.append(chunk)
        _, _, usage = os.wait4(p.pid, 0)
        p.returncode = 0  # (reaped here; Popen must not wait for it again)
        times.append(time.perf_counter() - t0)
        peaks.append(usage.ru_maxrss / 1024)
        out = b"".join(chunks)
    return statistics.median(times), max(peaks), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=20_000)
    ap.add_argument("--domains", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    import xenevt
    from xenevt.metrics.serve import Exporter, exposition, registry

    with tempfile.TemporaryDirectory(prefix="xenevt-bench-exporter-") as state, \
            tempfile.TemporaryDirectory(prefix="xenevt-bench-pyc-") as pyc:
        domains = min(args.domains, MAX_DOMAINS)
        made = spread_host(state, domains, args.channels)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(XENEVT_STATE=state, XENEVT_BACKEND="sim", PYTHONPYCACHEPREFIX=pyc)
        run(XENEVT + ["exporter", "--once"], env, 1)  # (bytecode compiled once)
        print(f"the exporter on {domains} domains, {made:,} channels (median of {args.reps}, fresh processes):")
        ref_t, ref_m, _ = run(XENEVT + ["--json", "list"], env, args.reps)
        print(f"  reference: xenevt --json list (dom0's {made:,} ports)   {ref_t:6.2f} s  peak {ref_m:6.1f} MiB")
        for label, extra in (("exporter --once", []), ("exporter --once --ports all", ["--ports", "all"])):
            t, m, out = run(XENEVT + ["exporter", "--once", "--timeout", "600", *extra], env, args.reps)
            series = sum(1 for line in out.decode().splitlines() if line and not line.startswith("#"))
            print(f"  {label:40s} {t:6.2f} s  peak {m:6.1f} MiB  {series:,} series   "
                  f"{t / ref_t:.2f}x the list's time (goal <= 1x), {m / ref_m:.2f}x its memory")
        ex = Exporter(xenevt.open("sim", state), timeout=600)
        reg = registry(ex)
        ex.round()
        rounds = []
        for _ in range(args.reps):
            r = ex.round()
            assert r is not None
            rounds.append(r.seconds)
        body = exposition(reg)
        t = statistics.median(rounds)
        print(f"  a running exporter's round (in process, median of {args.reps}): {t:.2f} s (goal < 0.5 s: "
              f"{'met' if t < 0.5 else 'NOT met'}); the scrape's body {len(body) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
