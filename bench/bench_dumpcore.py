"""Peak memory of `xenevt dump --dump-core` on a multi-GiB guest's core, beside a bare interpreter's in the same run.
A figure printer, not a test: it asserts nothing.

The cores are sparse (tests/guestmem_writer.sparse_core: every page listed in .xen_pfn or .xen_p2m, .xen_pages a
hole but for the kernel's pages), an HVM and a PV guest of --gib GiB each (default 4; issue 21's goal: peak RSS
under 100 MiB).  Each run is a fresh process; its peak RSS is the kernel's (wait4's ru_maxrss), beside that of
`python -c pass` and of `python -c "import xenevt.cli"` run the same way.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.guestmem_writer import sparse_core  # noqa: E402

# A child's ru_maxrss starts at its parent's when forked (and a vfork's exec inherits the parent's high-water mark),
# so each command runs under this small launcher, whose own size is the floor every figure shares.
LAUNCH = ("import os, resource, sys\n"
          "pid = os.fork()\n"
          "if pid == 0:\n"
          "    fd = os.open(os.devnull, os.O_WRONLY); os.dup2(fd, 1)\n"
          "    os.execv(sys.argv[1], sys.argv[1:])\n"
          "_, status = os.waitpid(pid, 0)\n"
          "print(os.waitstatus_to_exitcode(status), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def peak(cmd: list[str]) -> tuple[int, float, int]:
    """(peak RSS in KiB, wall seconds, exit status) of ``cmd`` in a fresh process, its output discarded."""
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", LAUNCH, *cmd], capture_output=True, text=True, check=True)
    took = time.perf_counter() - t0
    rc, rss = map(int, run.stdout.split())
    if rc:
        print(f"  {' '.join(cmd[-4:])}: exit {rc}: {run.stderr.strip()[:200]}")
    return rss, took, rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=4, help="guest size in GiB (default 4)")
    a = ap.parse_args()
    py = sys.executable
    rows = [("python -c pass", [py, "-c", "pass"]), ("python -c 'import xenevt.cli'", [py, "-c", "import xenevt.cli"])]
    with tempfile.TemporaryDirectory(prefix="xenevt-bench-dumpcore-") as tmp:
        for kind in ("HVM", "PV"):
            d = os.path.join(tmp, kind)
            os.mkdir(d)
            core, smap = sparse_core(d, gib=a.gib, pv=kind == "PV")
            size = os.path.getsize(core)
            rows.append((f"dump --dump-core, {kind} {a.gib} GiB ({size / 2**30:.2f} GiB file)",
                         [py, "-m", "xenevt", "dump", "--json", "--dump-core", core, "--system-map", smap]))
        peak(rows[0][1])  # warm the page cache and bytecode before anything is measured
        print(f"{'process (each under the launcher)':<52} {'peak RSS':>10} {'time':>8}")
        for label, cmd in rows:
            rss, took, rc = peak(cmd)
            print(f"{label:<52} {rss / 1024:>7.1f} MiB {took:>6.2f} s{'' if rc == 0 else f'  exit {rc}'}")


if __name__ == "__main__":
    main()
