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


def run(cmd: list[str], env: dict, reps: int) -> tuple[float, float, bytes, float]:
    """Median wall seconds and peak RSS (MiB) of ``cmd`` in a fresh process each time (each child's own peak, by
    wait4: RUSAGE_CHILDREN would give the largest child so far), its last output, and its median CPU seconds
    (user + system, by the same wait4: on a busy machine, what the process itself cost)."""
    times, peaks, cpus, out = [], [], [], b""
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
        cpus.append(usage.ru_utime + usage.ru_stime)
        out = b"".join(chunks)
    return statistics.median(times), max(peaks), out, statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=20_000)
    ap.add_argument("--domains", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="xenevt-bench-exporter-") as state, \
            tempfile.TemporaryDirectory(prefix="xenevt-bench-pyc-") as pyc:
        domains = min(args.domains, MAX_DOMAINS)
        made = spread_host(state, domains, args.channels)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(XENEVT_STATE=state, XENEVT_BACKEND="sim", PYTHONPYCACHEPREFIX=pyc)
        run(XENEVT + ["exporter", "--once"], env, 1)  # (bytecode compiled once)
        print(f"the exporter on {domains} domains, {made:,} channels (median of {args.reps}, fresh processes):")
        start_t, _, _, start_c = run(XENEVT + ["--version"], env, args.reps)
        ref_t, ref_m, _, ref_c = run(XENEVT + ["--json", "list"], env, args.reps)
        print(f"  reference: xenevt --json list (dom0's {made:,} ports)   {ref_t:6.2f} s  CPU {ref_c:6.2f} s  "
              f"peak {ref_m:6.1f} MiB   (a bare start, xenevt --version: CPU {start_c:.2f} s)")
        for label, extra in (("exporter --once", []), ("exporter --once --ports all", ["--ports", "all"])):
            t, m, out, c = run(XENEVT + ["exporter", "--once", "--timeout", "600", *extra], env, args.reps)
            series = sum(1 for line in out.decode().splitlines() if line and not line.startswith("#"))
            print(f"  {label:40s} {t:6.2f} s  CPU {c:6.2f} s  peak {m:6.1f} MiB  {series:,} series   "
                  f"{t / ref_t:.2f}x the list's time (goal <= 1x; by CPU {c / ref_c:.2f}x; past the bare start "
                  f"{(c - start_c) / max(ref_c - start_c, 1e-3):.2f}x), {m / ref_m:.2f}x its memory")
        in_process(state, args.reps)


def in_process(state: str, reps: int) -> None:
    """A running exporter's round, and the doctor inside it, each beside listing every domain's ports through
    the same Host (``host.ports``), interleaved so that all three sample the same load; CPU seconds are the
    process's (the round runs in the exporter's worker thread)."""
    import xenevt
    from xenevt.metrics.serve import Exporter, exposition, registry

    host = xenevt.open("sim", state)
    ex = Exporter(host, timeout=600)
    reg = registry(ex)
    ex.round()
    doms = host.domains()
    refs, rounds, cpus, docs = [], [], [], []
    for _ in range(reps):
        host.refresh()
        c0 = time.process_time()
        for d in doms:
            host.ports(d)
        refs.append(time.process_time() - c0)
        c0 = time.process_time()
        r = ex.round()
        cpus.append(time.process_time() - c0)
        assert r is not None and ex.latest is not None
        rounds.append(r.seconds)
        previous = ex.latest.diagnosis
        host.refresh()
        c0 = time.process_time()
        host.doctor(since=previous)
        docs.append(time.process_time() - c0)
    body = exposition(reg)
    ref, t, c, doc = (statistics.median(x) for x in (refs, rounds, cpus, docs))
    print(f"a running exporter, in process (median of {reps}, interleaved; CPU seconds):")
    print(f"  {'reference: host.ports of every domain':44s} CPU {ref:6.2f} s")
    print(f"  {'one round (a collection)':44s} CPU {c:6.2f} s   {c / ref:5.1f}x the listing's CPU; {t:.2f} s wall "
          f"(goal < 0.5 s: {'met' if t < 0.5 else 'NOT met'}; by CPU {'met' if c < 0.5 else 'NOT met'})")
    print(f"  {'  of which doctor (since the previous round)':44s} CPU {doc:6.2f} s   {doc / ref:5.1f}x the listing's "
          f"CPU; the families and the rest: CPU {max(c - doc, 0):.2f} s")
    print(f"  the scrape's body {len(body) / 1024:.0f} KiB")

if __name__ == "__main__":
    main()
