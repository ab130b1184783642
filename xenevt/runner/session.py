"""One ``xenevt runner run``: fetch, build, boot, the command's output streamed; its exit code returned."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .boot import BOOT_STAGES, Console, boot, choose_accel, qemu_command
from .build import RECIPE, build, root_packages
from .fetch import cache_key, default_cache, fetch
from .stage import EXIT_RUNNER, EXIT_TIMEOUT, StageFailed

FETCH_TIMEOUT = 900.0
BUILD_TIMEOUT = 600.0


@dataclass
class Options:
    command: list[str]
    xen: str = "4.17"
    domus: int = 0
    abi: str = "fifo"
    project: str = "."
    timeout: float = 1800.0
    accel: str = "auto"
    log: str = "xenevt-runner-console.log"
    cache: str = field(default_factory=default_cache)
    deb: str | None = None  # xenevt's .deb for dom0 to install with dpkg (else this xenevt is copied in)


def say(msg: str) -> None:
    print(f"runner: {msg}", file=sys.stderr, flush=True)


@contextmanager
def cache_lock(cache: str, report: Callable[[str], None]) -> Iterator[None]:
    """The cache to ourselves while fetching and building (apt's downloads and the cached roots are written
    aside and renamed, but two runs would each do the work, and race on the same temporary names)."""
    import fcntl

    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, "lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(f"waiting for another run using the cache {cache}")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def prefetch(xen: str, cache: str, report: Callable[[str], None] = say) -> str:
    """Fill the cache for ``xen``; returns the CI cache key."""
    with cache_lock(cache, report):
        pk = fetch(xen, root_packages(xen), cache, FETCH_TIMEOUT, report)
    return f"xenevt-runner-{xen}-{cache_key(pk, RECIPE)}"


def run(opts: Options, output: Callable[[str], None] | None = None, report: Callable[[str], None] = say) -> int:
    """The command's exit code; EXIT_TIMEOUT when it ran out of time, EXIT_RUNNER when a stage before or after
    it failed (one line naming the stage)."""
    output = output or (lambda line: print(line, flush=True))
    limits = {"boot-xen": 180.0, "boot-dom0": 300.0, "dom0-init": 120.0 + 60.0 * opts.domus,
              "command": opts.timeout, "shutdown": 60.0}
    seconds: list[str] = []

    def stage_done(stage: str, secs: float) -> None:
        seconds.append(f"{stage} {secs:.1f} s")
        report(f"stage {stage}: {secs:.1f} s")

    def stop(signum: int, frame: object) -> None:  # a CI job's SIGTERM still stops QEMU (finally blocks run)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    work = tempfile.mkdtemp(prefix="xenevt-runner-")
    log = os.path.abspath(opts.log)
    console = Console(output, report)
    current = "fetch"  # the stage an OSError (a cache or log the runner cannot write) is said of
    try:
        accel, why = choose_accel(opts.accel)
        report(f"accel {accel} ({why})")
        t = time.monotonic()
        with cache_lock(opts.cache, report):  # another run filling the same cache finishes first
            pk = fetch(opts.xen, root_packages(opts.xen), opts.cache, FETCH_TIMEOUT, report)
            stage_done("fetch", time.monotonic() - t)
            t = time.monotonic()
            current = "build-initramfs"
            img = build(pk, opts.cache, opts.project, opts.command, work, BUILD_TIMEOUT, report, opts.deb)
        stage_done("build-initramfs", time.monotonic() - t)
        args = f"runner_domu={opts.domus} runner_abi={opts.abi}"
        report(f"console log {log}")
        current = "boot"
        try:
            to_command = boot(img, qemu_command(img, accel, log, args), log, limits, console, stage_done)
        except StageFailed as e:
            if e.stage not in BOOT_STAGES:
                raise
            first = f"{log}.first-boot"
            if os.path.exists(log):
                os.replace(log, first)
            report(f"{e}: before dom0's /init, so before the command ran; booting once more (the first boot's "
                   f"console: {first})")
            console = Console(output, report)
            to_command = boot(img, qemu_command(img, accel, log, args), log, limits, console, stage_done)
        facts = console.facts
        report(f"xen {facts.get('xen', '?')}, dom0 linux {facts.get('linux', '?')}, {facts.get('abi', '?')} ABI; "
               f"boot to command {to_command:.1f} s ({accel})")
        report("stage seconds: " + ", ".join(seconds))
        assert console.rc is not None  # (the shutdown stage starts at the command's end marker only)
        if console.rc:
            report(f"the command exited {console.rc}")
        return console.rc
    except StageFailed as e:
        if seconds:
            report("stage seconds: " + ", ".join(seconds))
        if e.stage == "command" and "timed out" in str(e):
            report(f"FAILED: {e} (the command's timeout, --timeout)")
            return EXIT_TIMEOUT
        report(f"FAILED: {e}" + (f" (console log {log})" if os.path.exists(log) else ""))
        return EXIT_RUNNER
    except OSError as e:
        stage = console.stage if current == "boot" else current
        report(f"FAILED: stage {stage}: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        return EXIT_RUNNER
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work, ignore_errors=True)
