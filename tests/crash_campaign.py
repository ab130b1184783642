"""A kill -9 campaign against the simulator: processes doing random hypercalls and upcalls on one shared host are
SIGKILLed at random instants; after each round the next open must leave the file consistent (``sim check``).

Each round forks ``workers`` processes (bind unbound/interdomain/IPI/VIRQ, close, notify, reset, mask, unmask,
set-priority, bind-vcpu, status, a vCPU taken down and up as Linux does or by VCPUOP alone, consume) on a small
host whose kernels bind Linux's per-CPU ports and chose both ABIs (by default dom0 and dom2
FIFO, dom1 2-level: interdomain channels cross them), so ports are reused all the time; after a random delay each is
killed with SIGKILL.  In half the rounds ``XENEVT_SIM_CRASH_SLEEP`` makes every step of an update sleep a little,
so kills land inside updates more often.  Then a writable open recovers (its ``recovered`` lines say whether a
kill landed inside an update), and ``check_host`` reads the file as it is: any line is an inconsistency (the file
is kept aside, repaired, and the campaign goes on).

    python -m tests.crash_campaign --kills 2000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time

from xenevt.errors import XenevtError
from xenevt.sim.check import check_host
from xenevt.sim.host import FILE_NAME, SimHost, create_host

DOMAINS, VCPUS = 3, 2
ABIS = ("fifo", "2l", "fifo")  # the ABI each domain's kernel chooses


def _worker(state: str, seed: int, crash_sleep: float) -> None:
    """Random operations as random domains until killed."""
    if crash_sleep:
        os.environ["XENEVT_SIM_CRASH_SLEEP"] = str(crash_sleep)
    rng = random.Random(seed)
    h = SimHost(state)
    claimed: set[tuple[int, int]] = set()
    while True:
        d = rng.randrange(DOMAINS)
        ports = [st.port for st in h.list_ports(d, d)]
        port = rng.choice(ports) if ports else 1
        op = rng.random()
        try:
            if op < 0.22:
                r = rng.randrange(DOMAINS)
                rp = h.alloc_unbound(r, r, d)
                if rng.random() < 0.85:
                    h.bind_interdomain(d, d, r, rp)
            elif op < 0.30:
                h.bind_ipi(d, d, rng.randrange(VCPUS))
            elif op < 0.34:
                h.bind_virq(d, d, rng.choice([0, 2, 7]), 0)
            elif op < 0.50:
                h.close_port(d, d, port)
            elif op < 0.66:
                h.send(d, d, port, tell_unbound=False)
            elif op < 0.67:
                h.reset(d, d)
            elif op < 0.71:
                h.mask(d, d, port)
            elif op < 0.76:
                h.unmask(d, d, port)
            elif op < 0.80:
                h.set_priority(d, d, port, rng.randrange(16))
            elif op < 0.83:
                h.bind_vcpu(d, d, port, rng.randrange(VCPUS))
            elif op < 0.86:  # (a reader holds the host lock too, in C: killed there, the next taker sees it)
                h.status(d if rng.random() < 0.8 else 0, d, port)
            elif op < 0.88:  # CPU hotplug, Linux's path (cut short, the next run finishes it)
                h.cpu_down(d, d, rng.randrange(1, VCPUS))
            elif op < 0.90:
                h.cpu_up(d, d, rng.randrange(1, VCPUS))
            elif op < 0.91:  # VCPUOP alone, behind the kernel's back
                h.vcpu_op(d, d, rng.randrange(1, VCPUS), rng.random() < 0.5)
            else:
                v = rng.randrange(VCPUS)
                if (d, v) not in claimed:
                    h.claim_vcpu(d, v, caller=d)
                    claimed.add((d, v))
                h.consume(d, v, rng.choice([1, 4, 256]), timeout=0, caller=d)
        except XenevtError:
            pass  # an answer (EBUSY, ENOSPC, EINVAL on a closed port...), not a failure


def run(kills: int, workers: int = 2, seed: int = 1, keep: str | None = None, quiet: bool = False,
        recover: bool = True, abis: tuple[str, ...] = ABIS) -> dict:
    """Run until ``kills`` SIGKILLs have hit live workers; returns the figures.  ``recover=False`` is the control
    run: the next open finishes nothing, so what check then finds is what recovery is for.  ``abis``: the ABI
    each domain's kernel chooses."""
    rng = random.Random(seed)
    base = tempfile.mkdtemp(prefix="xenevt-kill-")
    state = os.path.join(base, "host")
    create_host(state, nr_domains=DOMAINS, nr_vcpus=VCPUS, max_ports_dom0=64, max_ports_domu=48,
                abis=dict(enumerate(abis)), percpu=True)
    figures = {"kills": 0, "rounds": 0, "inside_update": 0, "intents_redone": 0, "raises_finished": 0,
               "consumers_cleared": 0, "lock_holders_dead": 0, "inconsistent": 0, "lines": []}
    start = time.monotonic()
    try:
        while figures["kills"] < kills:
            figures["rounds"] += 1
            crash_sleep = 0.002 if rng.random() < 0.5 else 0.0
            pids = []
            for _ in range(workers):
                s = rng.randrange(1 << 30)
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child dies by SIGKILL
                    try:
                        _worker(state, s, crash_sleep)
                    finally:
                        os._exit(0)
                pids.append(pid)
            for pid in pids:
                time.sleep(rng.uniform(0.0, 0.03))
                os.kill(pid, signal.SIGKILL)
            for pid in pids:
                _, status = os.waitpid(pid, 0)
                if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                    figures["kills"] += 1
            with SimHost(state, recover=recover) as h:  # the next open: recovery
                rec = list(h.recovered)
            if rec:
                figures["inside_update"] += 1
            figures["intents_redone"] += sum(line.startswith("redid") for line in rec)
            figures["raises_finished"] += sum(line.startswith("finished a raise") for line in rec)
            figures["consumers_cleared"] += sum(line.startswith("cleared vCPU") for line in rec)
            figures["lock_holders_dead"] += sum(line.startswith("took the host lock") for line in rec)
            left, _, _ = check_host(state)
            if left:
                figures["inconsistent"] += 1
                figures["lines"] += [f"round {figures['rounds']}: {line}" for line in left] + \
                    [f"round {figures['rounds']}: recovery said: {line}" for line in rec]
                if keep:
                    os.makedirs(keep, exist_ok=True)
                    shutil.copy(os.path.join(state, FILE_NAME), os.path.join(keep, f"round{figures['rounds']}.xes"))
                check_host(state, repair=True)
            if not quiet and figures["rounds"] % 100 == 0:
                print(f"  {figures['kills']} kills, {figures['inconsistent']} inconsistent", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    figures["seconds"] = round(time.monotonic() - start, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", help="copy each inconsistent state file into this folder")
    ap.add_argument("--no-recover", action="store_true", help="control run: the next open recovers nothing")
    ap.add_argument("--abis", default=",".join(ABIS),
                    help=f"the ABI of each of the {DOMAINS} domains' kernels, fifo or 2l, comma-separated "
                         "(default: %(default)s)")
    a = ap.parse_args(argv)
    abis = tuple(a.abis.split(","))
    if len(abis) != DOMAINS or set(abis) - {"fifo", "2l"}:
        ap.error(f"--abis {a.abis!r}: give {DOMAINS} of fifo or 2l, comma-separated")
    f = run(a.kills, a.workers, a.seed, a.keep, recover=not a.no_recover, abis=abis)
    for line in f["lines"][:50]:
        print(line)
    print(f"kill campaign ({a.abis}): {f['kills']} kills in {f['rounds']} rounds, {f['inside_update']} rounds left "
          f"an update to finish ({f['intents_redone']} intent records redone, {f['raises_finished']} raises finished, "
          f"{f['consumers_cleared']} killed consumers cleared, {f['lock_holders_dead']} host locks taken over from a "
          f"killed holder), {f['inconsistent']} inconsistent files after the "
          f"next open, {f['seconds']} s")
    return 1 if f["inconsistent"] else 0


if __name__ == "__main__":
    sys.exit(main())
