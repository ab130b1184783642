"""Boot the PV test guest (tests/guest) with a program and read what it printed: dom0 only.

The guest (``make guest``: build/guest/xenevt-test-guest) runs the program given as its PV module (xl's
``ramdisk=``) and prints a record on its PV console, which xenconsoled logs to
``/var/log/xen/console/guest-NAME.log`` (``--log=guest``, as ci/xen/init.sh starts it).  Program and record
formats: tests/guest/guest.c and tests/test_guest.py.

    with GuestRun("scenario s\\n0 alloc_unbound self self\\nend\\n") as run:
        run.lines  # ["XENEVT-GUEST xen 4.17 domid 3 vcpus 2", "SCEN s", "STEP 1 ok 2", ..., "END"]
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG_DIR = os.environ.get("XENEVT_CONSOLE_LOG_DIR", "/var/log/xen/console")
FIRST = "XENEVT-GUEST"
_FIRST = re.compile(r"^XENEVT-GUEST xen (\d+\.\d+) domid (\d+) vcpus (\d+)$")


class _Silent(Exception):
    """The guest's console stayed empty: xenconsoled never attached it."""


class GuestRunError(RuntimeError):
    """The guest did not get to END: why, with the last lines of its console."""


def guest_binary() -> str:
    return os.environ.get("XENEVT_TEST_GUEST") or os.path.join(ROOT, "build", "guest", "xenevt-test-guest")


def find_xl() -> str | None:
    """xl as ci/xen/init.sh finds it: on PATH, else Debian's /usr/lib/xen-*/bin."""
    return shutil.which("xl") or next(iter(sorted(glob.glob("/usr/lib/xen-*/bin/xl"))), None)


def usable() -> str | None:
    """None where a guest can be booted here (a Xen dom0 with xl), else why not."""
    if not os.path.exists("/dev/xen/privcmd"):
        return "not a Xen dom0: /dev/xen/privcmd is missing"
    if not find_xl():
        return "xl is not installed"
    if not os.path.exists(guest_binary()):
        return f"the test guest is not built: {guest_binary()} (make guest)"
    return None


class GuestRun:
    """Context manager: ``xl create`` the guest with ``program``, wait for END, parse; ``xl destroy`` on exit."""

    def __init__(self, program: str, *, name: str = "xenevt-test-guest", vcpus: int = 2, memory_mb: int = 32,
                 timeout: float = 60.0):
        self.program = program
        self.name = name
        self.vcpus = vcpus
        self.memory_mb = memory_mb
        self.timeout = timeout
        self.domid: int = -1
        self.xen_version: str = ""
        self.nr_vcpus: int = 0
        self.lines: list[str] = []
        self.seconds: float = 0.0  # from `xl create` to END
        self.create_seconds: float = 0.0  # `xl create` alone
        self.log = os.path.join(LOG_DIR, f"guest-{name}.log")
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._xl = find_xl() or "xl"

    # --- xl ---------------------------------------------------------------------------------------------------
    def _xl_run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([self._xl, *args], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise GuestRunError(f"xl {' '.join(args)} failed (exit {r.returncode}): "
                                f"{(r.stderr or r.stdout).strip()[-800:]}")
        return r

    def _state(self) -> str | None:
        """The domain's xl list state letters (r b p s c d), None when it is gone."""
        r = self._xl_run("list", self.name, check=False)
        if r.returncode != 0:
            return None
        rows = r.stdout.strip().splitlines()
        return rows[-1].split()[4] if len(rows) >= 2 and len(rows[-1].split()) > 4 else ""

    def _console(self) -> list[str]:
        try:
            with open(self.log, "rb") as f:
                return [ln.rstrip("\r") for ln in f.read().decode(errors="replace").splitlines()]
        except FileNotFoundError:
            return []

    def _fail(self, why: str) -> GuestRunError:
        tail = self._console()[-15:]
        text = "\n    ".join(tail) if tail else f"(nothing in {self.log})"
        try:  # what Xen said meanwhile (a crash, a refused hypercall, xenconsoled's state)
            dmesg = subprocess.run([self._xl, "dmesg"], capture_output=True, text=True, timeout=20).stdout
            xen = "\n    ".join(dmesg.splitlines()[-10:])
        except (OSError, subprocess.SubprocessError) as e:
            xen = f"(xl dmesg: {e})"
        return GuestRunError(f"test guest {self.name}: {why}; its console's last lines:\n    {text}\n"
                             f"  xl dmesg's last lines:\n    {xen}")

    # --- the run ----------------------------------------------------------------------------------------------
    def __enter__(self) -> GuestRun:
        binary = guest_binary()
        if not os.path.exists(binary):
            raise GuestRunError(f"the test guest is not built: {binary} (make guest)")
        self._tmp = tempfile.TemporaryDirectory(prefix="xenevt-guest-")
        prog = os.path.join(self._tmp.name, "program.txt")
        with open(prog, "w") as f:
            f.write(self.program if self.program.endswith("\n") else self.program + "\n")
        cfg = os.path.join(self._tmp.name, "guest.cfg")
        with open(cfg, "w") as f:
            f.write(f'name = "{self.name}"\ntype = "pv"\nkernel = "{binary}"\nramdisk = "{prog}"\n'
                    f"memory = {self.memory_mb}\nvcpus = {self.vcpus}\n"
                    'on_poweroff = "preserve"\non_crash = "preserve"\non_reboot = "preserve"\n')
        t0 = time.monotonic()
        # a guest boots to END in about a second; one whose console stays empty this long was never attached by
        # xenconsoled (seen twice in some fifty xen-ci runs: the domain blocked, its console port unbound), so
        # it is created once more, said on the console, within the same time limit
        silent = min(90.0, self.timeout / 2)
        for attempt in (1, 2):
            if self._state() is not None:  # a leftover of an earlier run (or of the first attempt)
                self._xl_run("destroy", self.name, check=False)
            try:
                os.unlink(self.log)  # xenconsoled appends: the record starts with this domain
            except FileNotFoundError:
                pass
            try:
                made = time.monotonic()
                self._xl_run("create", cfg, timeout=max(30.0, self.timeout))
                self.create_seconds = time.monotonic() - made
                self.domid = int(self._xl_run("domid", self.name).stdout.strip())
                self._wait(t0, time.monotonic() + silent if attempt == 1 else None)
                break
            except _Silent:
                print(f"XENCI-INFO test guest {self.name}: nothing on its console in {silent:.0f} s "
                      "(xenconsoled did not attach it): created again", flush=True)
            except BaseException:
                self._destroy()
                raise
        self.seconds = time.monotonic() - t0
        return self

    def _wait(self, t0: float, silent_until: float | None = None) -> None:
        deadline = t0 + self.timeout
        while True:
            lines = self._console()
            if not lines and silent_until is not None and time.monotonic() > silent_until:
                raise _Silent()
            starts = [i for i, ln in enumerate(lines) if ln.startswith(FIRST)]
            if starts:
                rec = lines[starts[-1]:]
                if "END" in rec:
                    self._parse(rec[:rec.index("END") + 1])
                    return
            state = self._state()
            if state is None:
                raise self._fail("the domain is gone before END")
            if "c" in state:
                raise self._fail(f"the domain crashed (xl list state {state})")
            if "s" in state:
                raise self._fail(f"the domain shut down before END (xl list state {state})")
            if time.monotonic() > deadline:
                raise self._fail(f"no END after {self.timeout:.0f} s (xl list state {state})")
            time.sleep(0.25)

    def _parse(self, rec: list[str]) -> None:
        self.lines = rec
        m = _FIRST.match(rec[0])
        if not m:
            raise self._fail(f"cannot read the first line {rec[0]!r}")
        self.xen_version = m.group(1)
        self.nr_vcpus = int(m.group(3))
        if int(m.group(2)) != self.domid:
            raise self._fail(f"the guest says domid {m.group(2)}, xl says {self.domid}")

    def _destroy(self) -> None:
        try:
            if self._state() is not None:
                self._xl_run("destroy", self.name, check=False)
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def __exit__(self, *exc) -> None:
        self._destroy()

    # --- reading the record -----------------------------------------------------------------------------------
    def scenarios(self) -> dict[str, list[list[str]]]:
        """Per scenario name, its steps; each step the list of lines from its STEP line to the next step."""
        out: dict[str, list[list[str]]] = {}
        steps: list[list[str]] | None = None
        for ln in self.lines:
            if ln.startswith("SCEN "):
                steps = out.setdefault(ln[5:], [])
            elif ln.startswith("STEP ") and steps is not None:
                steps.append([ln])
            elif steps and ln != "END" and not ln.startswith("BAD LINE"):
                steps[-1].append(ln)
        return out
