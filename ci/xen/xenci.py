"""The nested Xen runner: Debian's Xens (4.17 from Debian 12, 4.20 from Debian 13) with that release's
dom0 under QEMU (TCG), real-Xen tests in dom0; one run per version, each from its own release's packages.

Stages, each bounded by a timeout that names it when it expires:
  fetch            Debian packages (apt-get download; cached in $XENCI_CACHE); another release's through a
                   private apt configuration, never the system's
  build-initramfs  dom0's root: python3, the Xen libraries and tools, busybox, the three Xen
                   drivers, this checkout and the PV test guest (make guest), as a gzipped newc cpio (cached
                   by content)
  boot-xen         QEMU starts; until the hypervisor hands over to dom0's kernel
  boot-dom0        until dom0's /init runs
  dom0-init        drivers loaded, xenfs mounted, until the tests start
  tests            pytest in dom0 (tests/test_on_xen.py + the contract tests' real-Xen half)
  shutdown         until QEMU exits after dom0 powers off
Everything is read from the serial console (build/xen-ci/console.log); QEMU is stopped on
every exit path.  Results: build/xen-ci/results.txt (per test) and summary.txt (one line).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # xenevt.runner (the standard library alone) from this checkout, for the system's python3
from xenevt.runner import boot, image  # noqa: E402
from xenevt.runner import fetch as runner_fetch  # noqa: E402
from xenevt.runner.image import cpio_newc  # noqa: E402,F401  (tests/test_xenci.py reads it here)
from xenevt.runner.stage import StageFailed, run  # noqa: E402

HERE = os.path.join(ROOT, "ci", "xen")
OUT_TOP = os.path.join(ROOT, "build", "xen-ci")
CACHE = os.environ.get("XENCI_CACHE", "/var/cache/xenevt-xen-ci")

# Debian release of each Xen: its own hypervisor, kernel, python3 and Xen tools make dom0's root
VERSIONS = runner_fetch.VERSIONS
DEFAULT_VERSIONS = "4.17 4.20"


def root_packages(xen: str) -> list[str]:
    return ["python3", "python3-minimal", "python3-cffi", "python3-cffi-backend", "python3-click", "python3-rich",
            "python3-pytest", "python3-pytest-timeout", "python3-prometheus-client", "libxenevtchn1",
            f"libxenmisc{xen}", "libxenforeignmemory1", "libxencall1", f"xen-utils-{xen}", "busybox-static",
            "python3-jsonschema", *runner_fetch.DPKG]  # (dom0 installs xenevt's .deb with dpkg)


EXCLUDE = runner_fetch.EXCLUDE
ROOTFS_RECIPE = "6"  # bump when prepare() changes what it makes of the packages: the cached roots are rebuilt
# the Debian suite whose xenevt package each Xen's dom0 installs (ci/deb.py builds it)
DEB_SUITES = dict(VERSIONS)
# gntdev/gntalloc for xenstored; netback in dom0 and netfront in the domUs give each domU a real PV vif
XEN_DRIVERS = ["xen-evtchn", "xen-privcmd", "xenfs", "xen-gntdev", "xen-gntalloc", "xen-netback", "xen-netfront"]
PROJECT = ["xenevt", "csrc", "tests", "examples", "pyproject.toml"]  # csrc: xen_api.h, which the binding reads
GUEST = os.path.join("build", "guest", "xenevt-test-guest")  # `make guest`; /xenevt/build/guest/... in dom0
PINGPONG = os.path.join("build", "c", "evtchn_pingpong")  # tests/c/evtchn_pingpong.c against this host's libxen-dev
CRASH = re.compile(r"Kernel panic|Hardware Dom0 crashed|Panic on CPU|Dom0 crashed|FATAL TRAP")
RESULT = re.compile(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)")
# pytest's short summary (-rA): one clean line per test at the end, whatever interleaved with the progress lines
SCENARIO = re.compile(r"^XENCI-SCENARIO (identical|different) (\S+)")
BENCH = re.compile(r"^XENCI-BENCH (.+)$")  # a figure a test measured in dom0, for the summary line
# a file a test made in dom0 (the exporter's exposition), for checks only the host can run (promtool): gzipped,
# base64 lines, then its SHA-256 (console lines can be split by Xen's own messages: a damaged file is said so)
FILE = re.compile(r"^XENCI-FILE ([A-Za-z0-9._-]{1,64}) (\d{1,6}) ([A-Za-z0-9+/=]{1,200})\s*$")
FILE_END = re.compile(r"^XENCI-FILE-END ([A-Za-z0-9._-]{1,64}) (\d{1,6}) ([0-9a-f]{64})\s*$")
FILE_CAP = 4 << 20  # bytes of one file once unpacked
REASON = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (tests/\S+?)(?: - (.*))?$")


def say(msg: str) -> None:
    print(f"xen-ci: {msg}", flush=True)


# --- fetch ---------------------------------------------------------------------------------------------------
def apt_options(suite: str) -> list[str]:
    """apt's options for ``suite`` (xenevt/runner/fetch.py): a private configuration under the cache for a release
    other than the machine's."""
    return runner_fetch.apt_options(suite, CACHE)


HOST_SUITE = runner_fetch.host_suite()


LOCK_NAME = "lock"  # in the cache, the runner's too (xenevt/runner/session.py): held by the run filling it
LOCK_PATIENCE = 3 * 3600.0  # seconds a run waits for another's fetch or build (both are bounded: 600 s a stage)


@contextlib.contextmanager
def cache_lock(stage: str, patience: float = LOCK_PATIENCE, poll: float = 0.5):
    """The cache filled by one run at a time (another run's apt, extractions and staging trees would clash with
    this one's): an exclusive flock on a file in the cache, waited for with one line naming the holder.  The
    wait is not counted in the stage's own timeout; the lock goes with the process, however it ends."""
    os.makedirs(CACHE, exist_ok=True)
    fd = os.open(os.path.join(CACHE, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            say(f"{stage}: waiting for the package cache {CACHE}: another xen-ci run (pid {holder}) is filling it")
            deadline = time.monotonic() + patience
            while True:
                time.sleep(poll)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StageFailed(stage, f"the package cache {CACHE} stayed locked by pid {holder} for "
                                                 f"{patience:.0f} s") from None
            say(f"{stage}: the package cache is ours")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # (the flock goes with its last descriptor)


def fetch(xen: str, timeout: float) -> dict:
    """dom0's packages for ``xen`` into the cache (xenevt/runner/fetch.py, with this root's package list), under
    the cache's lock."""
    with cache_lock("fetch"):
        return runner_fetch.fetch(xen, root_packages(xen), CACHE, timeout, say, EXCLUDE)


# --- build ---------------------------------------------------------------------------------------------------
def _extract(debs: list[str], dest: str, stage: str, timeout: float, prepare=None) -> None:
    image.extract(debs, dest, stage, timeout, prepare)


def _digest(paths: list[str]) -> str:
    return image.digest(paths, ROOT)


def build_guest(stage: str, timeout: float) -> str:
    """The PV test guest (tests/guest), built on this host: dom0 boots it with xl (tests/test_guest.py)."""
    run(["make", "--no-print-directory", "-C", ROOT, "guest"], stage, timeout)
    return os.path.join(ROOT, GUEST)


def build_pingpong(stage: str, timeout: float) -> str | None:
    """The plain libxenevtchn C program (tests/c), built here against libxen-dev: dom0 times xenevt's notify ->
    deliver round trip beside it.  libxenevtchn.so.1 is the same ABI in every Debian Xen; None without headers."""
    if not os.path.exists("/usr/include/xenevtchn.h"):
        say("no /usr/include/xenevtchn.h (apt install libxen-dev): the round-trip figure is not measured")
        return None
    out = os.path.join(ROOT, PINGPONG)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    run([os.environ.get("CC", "cc"), "-O2", "-Wall", "-Wextra", "-Werror", os.path.join(ROOT, "tests", "c",
         "evtchn_pingpong.c"), "-o", out + ".tmp", "-lxenevtchn"], stage, timeout)
    os.replace(out + ".tmp", out)
    return out


def build_deb(xen: str, timeout: float) -> str:
    """xenevt's .deb for ``xen``'s dom0 suite, built by ci/deb.py in a chroot of that suite (warm: its chroot is
    cached); dom0 installs it with dpkg and the real-Xen tests run against it."""
    suite = DEB_SUITES[xen]
    out = os.path.join(ROOT, "build", "deb", suite)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    run([sys.executable, os.path.join(ROOT, "ci", "deb.py"), "build", "--suite", suite, "--out", out],
        "build-deb", timeout)
    debs = sorted(glob.glob(os.path.join(out, "xenevt_*.deb")))
    if len(debs) != 1:
        raise StageFailed("build-deb", f"ci/deb.py left {len(debs)} xenevt .deb files in {out}")
    say(f"[{xen}] {os.path.basename(debs[0])} built in {time.monotonic() - t0:.0f} s")
    return debs[0]


def build(pk: dict, timeout: float, deb: str | None = None) -> dict:
    """dom0's boot files from ``pk``'s packages, made into the cache (under its lock) or found there; with
    ``deb``, dom0 installs that package instead of running the checkout's xenevt."""
    with cache_lock("build-initramfs"):
        return _build(pk, timeout, deb)


def _build(pk: dict, timeout: float, deb: str | None = None) -> dict:
    stage = "build-initramfs"
    t0 = time.monotonic()
    names = "\n".join(os.path.basename(d) for d in pk["root"])
    deb_key = hashlib.sha256((ROOTFS_RECIPE + names).encode()).hexdigest()[:16]
    base = os.path.join(CACHE, f"rootfs-{deb_key}")
    def prepare(tree: str) -> None:
        image.prune(tree)
        # /init's own tools are busybox's, first on its PATH: a release's util-linux mount may need libraries
        # left out of this root (Debian 13's does)
        image.busybox_links(tree, stage, timeout)
        # byte-compile with dom0's own python: no compiling at import time under TCG
        pylibs = [p[len(tree):] for p in glob.glob(os.path.join(tree, "usr", "lib", "python3.*"))]
        run(["chroot", tree, "/usr/bin/python3", "-m", "compileall", "-q", *pylibs,
             "/usr/lib/python3/dist-packages"], stage, timeout)
        image.dpkg_status(pk["root"], tree, EXCLUDE, stage, timeout)

    if not os.path.isdir(base):
        say("extracting dom0's userspace")
        _extract(pk["root"], base, stage, timeout, prepare)
    if not os.path.isdir(os.path.join(CACHE, "kernel-" + os.path.basename(pk["kernel"])[:-4])):
        say("extracting the dom0 kernel")
    xen_elf, vmlinuz, kdir = image.boot_images(pk, CACHE, stage, timeout)
    guest = build_guest(stage, timeout)
    pingpong = build_pingpong(stage, timeout)
    key = hashlib.sha256((deb_key + _digest([os.path.join(ROOT, p) for p in PROJECT] + [guest] + (
        [pingpong] if pingpong else []) + ([deb] if deb else []) + [
        os.path.join(HERE, f) for f in ("init.sh", "domu-init.sh", "domu_check.py")]) + os.path.basename(kdir)
                          ).encode()).hexdigest()[:16]
    initrd = os.path.join(CACHE, f"initrd-{key}.gz")
    if os.path.exists(initrd):
        say(f"initramfs cached ({os.path.getsize(initrd) / 1e6:.1f} MB)")
        return {"xen": xen_elf, "kernel": image.elf_kernel(vmlinuz), "initrd": initrd}

    def root(tree: str, init: str, package: str | None = None) -> None:
        """dom0's userspace + the Xen drivers + this checkout, byte-compiled, with ``init`` as /init; with
        ``package``, the checkout's tests and tools without its xenevt, and the .deb at /xenci/xenevt.deb."""
        shutil.rmtree(tree, ignore_errors=True)
        run(["cp", "-a", base, tree], stage, timeout)
        image.copy_drivers(kdir, XEN_DRIVERS, os.path.join(tree, "lib", "modules", "xenci"), stage)
        proj = os.path.join(tree, "xenevt")
        os.makedirs(os.path.join(proj, "ci", "xen"))
        if package is not None:
            os.makedirs(os.path.join(tree, "xenci"))
            shutil.copy(package, os.path.join(tree, "xenci", "xenevt.deb"))
        for p in PROJECT:
            if package is not None and p == "xenevt":
                continue  # (the tests import the installed package)
            src = os.path.join(ROOT, p)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(proj, p), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(src, proj)
        shutil.copy(os.path.join(HERE, "domu_check.py"), os.path.join(proj, "ci", "xen"))
        os.makedirs(os.path.join(proj, "build", "guest"))
        shutil.copy(guest, os.path.join(proj, GUEST))
        if pingpong:
            os.makedirs(os.path.join(proj, os.path.dirname(PINGPONG)))
            shutil.copy(pingpong, os.path.join(proj, PINGPONG))
        if package is None and not glob.glob(os.path.join(proj, "xenevt", "_native*.so")):
            raise StageFailed(stage, "xenevt/_native*.so is not built: run `make setup` first")
        run(["chroot", tree, "/usr/bin/python3", "-m", "compileall", "-q", "/xenevt"], stage, timeout)
        shutil.copy(os.path.join(HERE, init), os.path.join(tree, "init"))
        os.chmod(os.path.join(tree, "init"), 0o755)

    def pack(tree: str, dest: str) -> None:
        image.pack(tree, dest)
        shutil.rmtree(tree, ignore_errors=True)

    # the PV domU: the same userspace with its own /init; dom0 starts it with the same kernel
    domu_tree, dom0_tree = os.path.join(CACHE, "staging-domu"), os.path.join(CACHE, "staging")
    root(domu_tree, "domu-init.sh")
    root(dom0_tree, "init.sh", deb)
    boot = os.path.join(dom0_tree, "boot")
    os.makedirs(boot, exist_ok=True)
    shutil.copy(vmlinuz, os.path.join(boot, "vmlinuz"))
    pack(domu_tree, os.path.join(boot, "domu.gz"))
    pack(dom0_tree, initrd)
    say(f"initramfs built: {os.path.getsize(initrd) / 1e6:.1f} MB (with the domU's) in {time.monotonic() - t0:.0f} s")
    # dom0's kernel as the ELF inside its bzImage: Xen's unpacking of the xz payload under TCG took ~8 s a boot
    return {"xen": xen_elf, "kernel": image.elf_kernel(vmlinuz), "initrd": initrd}


# --- boot and test -----------------------------------------------------------------------------------------------
class ConsoleWatcher:
    """Reads the serial console line by line: stage changes, versions, test results, crashes."""

    NEXT = {"boot-xen": ("boot-dom0", re.compile(r"Linux version")),
            "boot-dom0": ("dom0-init", re.compile(r"XENCI-STAGE dom0-init")),
            "dom0-init": ("tests", re.compile(r"XENCI-BEGIN")),
            "tests": ("shutdown", re.compile(r"XENCI-SUMMARY rc=(\d+)"))}

    def __init__(self, report=say):
        self.stage = "boot-xen"
        self.facts: dict = {"results": [], "summary": {}, "reasons": {}, "rc": None, "scenarios": {}, "bench": [],
                            "files": {}}
        self.report = report
        self._chunks: dict[str, dict[int, str]] = {}

    def feed(self, line: str) -> str | None:
        """Take one console line; returns the new stage when this line starts one."""
        f = self.facts
        for key, pattern in (("xen", r"Xen version (\S+)"), ("linux", r"Linux version (\S+)"),
                             ("package", r"^XENCI-STAGE installed xenevt (\S+)")):
            m = re.search(pattern, line)
            if m and key not in f:
                f[key] = m.group(1)
        if "Using FIFO-based ABI" in line:
            f["abi"] = "FIFO"
        elif "Using 2-level ABI" in line:
            f["abi"] = "2-level"
        m = re.match(r"^(tests/\S+::\S+)", line)
        if m and self.stage == "tests":
            f["current"] = m.group(1)  # pytest -v names a test before running it
        m = RESULT.match(line)
        if m:
            f["results"].append((m.group(2), m.group(1)))
            self.report(f"  {m.group(2):7s} {m.group(1)}")
        m = REASON.match(line)
        if m and self.stage == "tests":
            f["summary"][m.group(2)] = m.group(1)
            f["reasons"][m.group(2)] = (m.group(3) or "").strip()
        m = SCENARIO.match(line)
        if m:  # the differential suite's verdict per scenario: real Xen's record against the simulator's
            f["scenarios"][m.group(2)] = m.group(1)
        m = BENCH.match(line)
        if m and m.group(1) not in f["bench"]:  # -rA prints a passed test's output again at the end
            f["bench"].append(m.group(1))
        self._file(line)
        if line.startswith(("XENCI-ERROR", "XENCI-INFO")):
            self.report(line)
        if CRASH.search(line):
            raise StageFailed(self.stage, f"crash on the console: {line.strip()[:120]}")
        if self.stage in self.NEXT:
            nxt, marker = self.NEXT[self.stage]
            m = marker.search(line)
            if m:
                if self.stage == "tests":
                    f["rc"] = int(m.group(1))
                self.stage = nxt
                return nxt
        return None

    def _file(self, line: str) -> None:
        """Collect XENCI-FILE lines; at XENCI-FILE-END, the file (bytes) or, damaged, the reason (str), in
        facts["files"]; the first whole copy wins (-rA prints a passed test's output a second time)."""
        files = self.facts["files"]
        m = FILE.match(line)
        if m:
            if not isinstance(files.get(m.group(1)), bytes):
                self._chunks.setdefault(m.group(1), {})[int(m.group(2))] = m.group(3)
            return
        m = FILE_END.match(line)
        if not m or isinstance(files.get(m.group(1)), bytes):
            return
        import base64
        import zlib

        name, count, digest = m.group(1), int(m.group(2)), m.group(3)
        chunks = self._chunks.pop(name, {})
        try:
            if sorted(chunks) != list(range(count)):
                raise ValueError(f"{count - len(chunks.keys() & set(range(count)))} of its {count} lines lost")
            packed = base64.b64decode("".join(chunks[i] for i in range(count)), validate=True)
            un = zlib.decompressobj(wbits=31)
            data = un.decompress(packed, FILE_CAP + 1)
            if len(data) > FILE_CAP or not un.eof:
                raise ValueError("cut short or larger than its cap")
            if hashlib.sha256(data).hexdigest() != digest:
                raise ValueError("its SHA-256 differs (a line damaged on the console)")
            files[name] = data
        except (ValueError, zlib.error) as e:
            files[name] = f"{name} from dom0 unreadable: {e}"

    def results(self) -> list[tuple[str, str]]:
        """(status, test) per test; the end-of-run summary wins over progress lines, which the
        hypervisor's own console messages can split."""
        merged = {n: st for st, n in self.facts["results"]}
        merged.update(self.facts["summary"])
        return [(st, n) for n, st in merged.items()]


def boot_and_test(img: dict, args, w: ConsoleWatcher, out: str) -> dict:
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "console.log")
    open(log, "w").close()
    extra = (" xenci_break=1" if args.break_ else "") + (" xenci_hang=1" if args.hang else "") + (
        f" xenci_only={'+'.join(args.only)}" if args.only else "")  # QEMU's -initrd splits modules at commas
    dom0 = f"console=hvc0 earlyprintk=xen rdinit=/init xenci_timeout={args.test_timeout}{extra}"
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "qemu64", "-m", "3072", "-smp", "2", "-nographic",
           "-no-reboot", "-serial", f"file:{log}", "-monitor", "none", "-display", "none",
           "-kernel", img["xen"],
           "-append", "console=com1 com1=115200,8n1 dom0_mem=1536M,max:1536M dom0_max_vcpus=2 loglvl=all "
                      "guest_loglvl=all noreboot",
           "-initrd", f"{img['kernel']} {dom0},{img['initrd']}"]
    limits = {"boot-xen": args.xen_timeout, "boot-dom0": args.dom0_timeout, "dom0-init": 300,
              "tests": args.tests_timeout, "shutdown": 60}
    t_start = started = time.monotonic()
    w.report(f"stage {w.stage} (QEMU TCG, log {os.path.relpath(log, ROOT)})")
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail = boot.LogTail(log)
    try:
        while True:
            for line in tail.lines():
                if w.feed(line):
                    w.report(f"stage {w.stage} after {time.monotonic() - t_start:.0f} s")
                    started = time.monotonic()
            if qemu.poll() is not None:
                if w.stage == "shutdown":
                    break
                raise boot.qemu_exited(w.stage, qemu)
            if time.monotonic() - started > limits[w.stage]:
                running = w.facts.get("current") if w.stage == "tests" else None
                raise StageFailed(w.stage, f"timed out after {limits[w.stage]:.0f} s"
                                  + (f" while running {running}" if running else ""))
            time.sleep(0.2)
    finally:
        boot.stop_qemu(qemu)
        w.facts["seconds"] = time.monotonic() - t_start
    return w.facts


def _test_name(text: str) -> str:
    """A --only word: it goes on dom0's kernel command line and into pytest's -k, so a plain identifier."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: give part of a test's name (letters, digits, _ and -)")
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description="Boot Xen + dom0 under QEMU and run xenevt's real-Xen tests.")
    ap.add_argument("--break", dest="break_", action="store_true", default=os.environ.get("XENCI_BREAK") == "1",
                    help="flip one expected value in dom0 (the run must fail naming that test)")
    ap.add_argument("--hang", action="store_true", default=os.environ.get("XENCI_HANG") == "1",
                    help="run a test that waits forever (must end by timeout, naming it)")
    ap.add_argument("--only", action="append", metavar="NAME", type=_test_name,
                    help="a developer's run: only the tests whose names contain NAME (repeatable; pytest -k)")
    ap.add_argument("--test-timeout", type=int, default=int(os.environ.get("XENCI_TEST_TIMEOUT", "240")),
                    help="seconds per test inside dom0")
    ap.add_argument("--tests-timeout", type=float, default=float(os.environ.get("XENCI_TIMEOUT", "2700")),
                    help="seconds for the whole in-dom0 test stage")
    ap.add_argument("--xen-timeout", type=float, default=180)
    # side by side was measured on the 2-core CI machine: both boots slowed 4-5x (dom0-init past its limit), so
    # one after the other stays the default
    ap.add_argument("--parallel", action="store_true", default=os.environ.get("XENCI_PARALLEL") == "1",
                    help="boot the versions side by side (XENCI_PARALLEL=1; for a machine with 4 cores or more)")
    ap.add_argument("--dom0-timeout", type=float, default=300)
    ap.add_argument("--deb", choices=("yes", "no"), default=os.environ.get("XENCI_DEB"),
                    help="dom0 installs xenevt's .deb for its Debian (built by ci/deb.py) and the tests run against "
                         "it (default: yes for a whole run, no with --only; $XENCI_DEB)")
    ap.add_argument("--xen", action="append", choices=sorted(VERSIONS),
                    help="only this Xen version (repeatable; default $XENCI_VERSIONS, else " + DEFAULT_VERSIONS + ")")
    args = ap.parse_args()
    import signal

    def stop(signum, frame):  # a CI timeout's SIGTERM must still stop QEMU (the finally blocks run)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    versions = args.xen or os.environ.get("XENCI_VERSIONS", DEFAULT_VERSIONS).split()
    unknown = [v for v in versions if v not in VERSIONS]
    if unknown:
        ap.error(f"unknown Xen version(s) {', '.join(unknown)}; known: {', '.join(VERSIONS)}")
    deb = (args.deb or ("no" if args.only else "yes")) == "yes"
    lines, ok = [], True
    if args.parallel and len(versions) > 1:
        # fetched and built one after the other (apt and the shared cache), then booted side by side
        import threading

        prepared = [prepare(xen, deb) for xen in versions]
        results: dict[str, tuple[bool, str]] = {}

        def one(xen: str, img, failure, t0: float) -> None:
            results[xen] = finish(xen, img, failure, t0, args)

        threads = [threading.Thread(target=one, args=p, name=f"xen-{p[0]}") for p in prepared]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for xen in versions:
            good, line = results[xen]
            ok &= good
            lines.append(line)
    else:
        for xen in versions:
            good, line = finish(*prepare(xen, deb), args)
            ok &= good
            lines.append(line)
    if len(lines) > 1:  # every version's verdict together at the end
        print("\n".join(lines), flush=True)
    with open(os.path.join(OUT_TOP, "summary.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0 if ok else 1


def check_files(files: dict, where: str) -> tuple[list[str], list[str]]:
    """Save the files dom0's tests sent (under ``where``) and check each as only the host can: an exposition
    (``*.prom``) by the real promtool.  Returns (what was checked, what failed)."""
    said, bad = [], []
    for name, data in sorted(files.items()):
        if isinstance(data, str):
            bad.append(data)
            continue
        os.makedirs(where, exist_ok=True)
        path = os.path.join(where, name)
        with open(path, "wb") as f:
            f.write(data)
        if not name.endswith(".prom"):
            continue
        promtool = shutil.which("promtool")
        if promtool is None:
            said.append(f"{name}: promtool not installed here, not checked")
            continue
        r = subprocess.run([promtool, "check", "metrics"], input=data, capture_output=True, timeout=120)
        series = sum(1 for ln in data.splitlines() if ln and not ln.startswith(b"#"))
        if r.returncode == 0:
            said.append(f"promtool check metrics: {name} ok ({series} series)")
        else:
            text = (r.stdout + r.stderr).decode(errors="replace").strip().splitlines()
            bad.append(f"promtool check metrics {name}: {' / '.join(text[:3])[:300]}")
    return said, bad


def failure_details(log: str, failed: list[str], most: int = 60, tests: int = 5) -> list[str]:
    """For each failed test, pytest's own account of it from the console (its ``E`` lines and what it printed),
    so that a CI log shows why without the console file; at most ``most`` lines a test, ``tests`` tests."""
    try:
        with open(log, errors="replace") as f:
            text = f.read()
    except OSError:
        return []
    start = text.find("= FAILURES =")
    if start < 0:
        start = text.find("= ERRORS =")
    if start < 0:
        return []
    blocks = re.split(r"^_{3,} (?:ERROR at \w+ of )?(\S+?) _{3,}\r?$", text[start:], flags=re.M)
    out, told = [], 0
    for name, body in zip(blocks[1::2], blocks[2::2], strict=True):
        if not any(n.endswith("::" + name) for n in failed):
            continue
        told += 1
        if told > tests:  # (forty tests of one module fixture fail alike)
            out.append(f"and {len(failed) - tests} more failed tests: see the console file")
            break
        body = body.split("= short test summary", 1)[0].split("= PASSES =", 1)[0]
        keep = [ln.rstrip() for ln in body.splitlines()
                if ln.startswith(("E ", ">", "tests/")) or "Captured" in ln]
        printed = body.split("Captured stdout call", 1)
        if len(printed) == 2:
            keep += [ln.rstrip() for ln in printed[1].splitlines()[1:] if ln.strip()][:most // 2]
        out.append(f"why {name} failed:")
        out += ["  " + ln[:300] for ln in keep[:most]]
    return out


def prepare(xen: str, deb: bool = False) -> tuple[str, dict | None, str | None, float]:
    """Fetch and build one Xen version's boot files (with ``deb``, xenevt's package for its dom0 first): (version,
    image or None, why it failed, start time)."""
    t0 = time.monotonic()
    try:
        say(f"[{xen}] stage fetch ({VERSIONS[xen]})")
        # worst case, every stage at its limit: 600+1800+600+180+300+300+2700+60 s = 109 min; in practice
        # 15-20 min a version
        pk = fetch(xen, 600)
        package = None
        if deb:
            say(f"[{xen}] stage build-deb ({DEB_SUITES[xen]})")
            package = build_deb(xen, 1800)
        say(f"[{xen}] stage build-initramfs")
        return xen, build(pk, 600, package), None, t0
    except StageFailed as e:
        say(f"[{xen}] FAILED: {e}")
        return xen, None, str(e), t0


def finish(xen: str, img: dict | None, failure: str | None, t0: float, args) -> tuple[bool, str]:
    """Boot and test one prepared version; its files under build/xen-ci/<version>/.  A boot that fails before
    dom0's /init is booted once more, and the result line says so with the first boot's failure."""
    out = os.path.join(OUT_TOP, xen)
    os.makedirs(out, exist_ok=True)
    watcher = ConsoleWatcher(report=lambda msg: say(f"[{xen}] {msg}"))
    first_boot = None
    while img is not None:
        try:
            boot_and_test(img, args, watcher, out)
        except StageFailed as e:
            if first_boot is None and e.stage in boot.BOOT_STAGES:  # (the runner's rule: before dom0's /init)
                first_boot = str(e)
                say(f"[{xen}] {first_boot}: before dom0's /init, so before anything of xenevt's ran; booting once more "
                    "(the first boot's console: console-first-boot.log)")
                log = os.path.join(out, "console.log")
                if os.path.exists(log):
                    os.replace(log, os.path.join(out, "console-first-boot.log"))
                watcher = ConsoleWatcher(report=lambda msg: say(f"[{xen}] {msg}"))
                continue
            failure = str(e)
            say(f"[{xen}] FAILED: {failure}")
        break
    facts = watcher.facts
    results = watcher.results()
    with open(os.path.join(out, "results.txt"), "w") as f:
        f.write("".join(f"{status} {name}\n" for status, name in results))
    passed = sum(1 for s, _ in results if s == "PASSED")
    failed = [n for s, n in results if s in ("FAILED", "ERROR")]
    skipped = sum(1 for s, _ in results if s == "SKIPPED")
    ok = failure is None and not failed and passed > 0 and facts.get("rc") == 0
    verdicts = list(facts["scenarios"].values())
    known = sum(1 for s, n in results if s == "XFAIL" and ("xen-real" in n or "xen-guest" in n))
    scen = (f"{verdicts.count('identical')} scenarios identical, {verdicts.count('different')} different"
            f"{f', {known} known differences' if known else ''}; ") if verdicts or known else ""
    line = (f"xen-ci: xen {facts.get('xen', xen + '.?')}: {scen}{passed} tests passed, {len(failed)} failed, "
            f"{skipped} skipped "
            f"(dom0 linux {facts.get('linux', '?')}, {facts.get('abi', '?')} ABI"
            + (f", xenevt {facts['package']} installed from its .deb" if facts.get("package") else "") + "; "
            f"boot to result {facts.get('seconds', 0):.0f} s, total {time.monotonic() - t0:.0f} s)")
    if facts["bench"]:
        line += "; " + "; ".join(facts["bench"])
    checked, bad = check_files(facts["files"], os.path.join(out, "files"))
    if checked:
        line += "; " + "; ".join(checked)
    if bad:
        ok = False
        line += " failed: " + "; ".join(bad)
    if failed:
        for text in failure_details(os.path.join(out, "console.log"), failed):
            say(f"[{xen}] {text}")
        reasons = facts.get("reasons", {})
        line += " failed: " + "; ".join(f"{n}" + (f" ({reasons[n][:100]})" if reasons.get(n) else "")
                                        for n in failed)
    elif facts.get("rc") not in (0, None) and failure is None:
        line += f" [pytest in dom0 exited {facts['rc']}]"
    if first_boot:
        line += f" [booted twice: the first boot's {first_boot}]"
    if failure:
        line += f" [{failure}]"
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(line + "\n")
    print(line, flush=True)
    return ok, line


if __name__ == "__main__":
    sys.exit(main())
