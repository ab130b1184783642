"""QEMU's boot of Xen and dom0, and the serial console read line by line as it grows.

Stages after the build: boot-xen (until dom0's kernel starts), boot-dom0 (until dom0's /init runs),
dom0-init (drivers, xenfs, the domUs), command (the user's command, its output streamed), shutdown."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable

from .stage import StageFailed

CRASH = re.compile(r"Kernel panic|Hardware Dom0 crashed|Panic on CPU|Dom0 crashed|FATAL TRAP")
# while the command runs, its own output may say anything: a crash is only the hypervisor's or the kernel's line
SYSTEM_LINE = re.compile(r"^(\(XEN\)|\[ *\d+\.\d+\])")
NEXT = {"boot-xen": ("boot-dom0", re.compile(r"Linux version")),
        "boot-dom0": ("dom0-init", re.compile(r"XENEVT-RUNNER-STAGE dom0-init")),
        "dom0-init": ("command", re.compile(r"XENEVT-RUNNER-BEGIN")),
        "command": ("shutdown", re.compile(r"XENEVT-RUNNER-END rc=(\d+)"))}
# before dom0's /init: a crash there is Xen's or Linux's own boot (under TCG, a kernel patching its own text has
# taken an int3 Oops at 2.6 s), before the project's command or anything of xenevt's ran: booted once more
BOOT_STAGES = ("boot-xen", "boot-dom0")
KVM_GET_API_VERSION = 0xAE00  # linux/kvm.h: _IO(KVMIO, 0x00); the stable API answers 12


def choose_accel(asked: str) -> tuple[str, str]:
    """(tcg or kvm, why): KVM where /dev/kvm opens, answers the stable API and is hardware virtualization
    (kvm_intel or kvm_amd: PV guests need no VMX, but a kvm_pvm /dev/kvm runs only PVM-aware guests)."""
    if asked == "tcg":
        return "tcg", "asked for"
    why = None
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        why = f"/dev/kvm: {e.strerror}"
    else:
        try:
            import fcntl

            if fcntl.ioctl(fd, KVM_GET_API_VERSION) != 12:
                why = "/dev/kvm answers an unknown API version"
        except OSError as e:
            why = f"/dev/kvm: {e.strerror}"
        finally:
            os.close(fd)
    if why is None and not any(os.path.isdir(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd")):
        why = "/dev/kvm is not hardware virtualization (no kvm_intel or kvm_amd module)"
    if why is None:
        return "kvm", "/dev/kvm is usable"
    if asked == "kvm":
        raise StageFailed("boot-xen", f"--accel kvm: {why}")
    return "tcg", why


def qemu_command(img: dict, accel: str, log: str, dom0_args: str, memory: int = 2048,
                 dom0_mem: int = 1024) -> list[str]:
    """Xen by QEMU's multiboot loader, dom0's kernel and initramfs as its modules, the console to ``log``.
    TCG: -cpu qemu64 (with -cpu max dom0 dies at its first instructions)."""
    cpu = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg", "-cpu", "qemu64"]
    return ["qemu-system-x86_64", *cpu, "-m", str(memory), "-smp", "2", "-nographic", "-no-reboot",
            "-serial", f"file:{log}", "-monitor", "none", "-display", "none", "-kernel", img["xen"],
            "-append", f"console=com1 com1=115200,8n1 dom0_mem={dom0_mem}M,max:{dom0_mem}M dom0_max_vcpus=2 "
                       "loglvl=all guest_loglvl=all noreboot",
            "-initrd", f"{img['kernel']} console=hvc0 earlyprintk=xen rdinit=/init {dom0_args},{img['initrd']}"]


class Console:
    """The runner's reading of the console: stage changes, the command's output and its exit code."""

    def __init__(self, output: Callable[[str], None], report: Callable[[str], None]):
        self.stage = "boot-xen"
        self.output = output
        self.report = report
        self.rc: int | None = None
        self.facts: dict[str, str] = {}

    def feed(self, line: str) -> str | None:
        """Take one line; returns the stage it starts, if any."""
        for key, pattern in (("xen", r"Xen version (\S+)"), ("linux", r"Linux version (\S+)")):
            m = re.search(pattern, line)
            if m and key not in self.facts:
                self.facts[key] = m.group(1)
        if "Using FIFO-based ABI" in line:
            self.facts.setdefault("abi", "FIFO")
        elif "Using 2-level ABI" in line:
            self.facts.setdefault("abi", "2-level")
        if CRASH.search(line) and (self.stage != "command" or SYSTEM_LINE.match(line)):
            raise StageFailed(self.stage, f"crash on the console: {line.strip()[:120]}")
        if self.stage != "command" and line.startswith("XENEVT-RUNNER-FATAL "):  # dom0's /init gave up
            raise StageFailed(self.stage, line.removeprefix("XENEVT-RUNNER-FATAL ").strip()[:200])
        m = re.match(r"XENEVT-RUNNER-STAGE installed xenevt (\S+)", line)
        if m and self.stage != "command":
            self.facts["package"] = m.group(1)
            self.report(f"xenevt {m.group(1)} installed in dom0 from the --deb package")
        nxt, marker = NEXT.get(self.stage, (None, None))
        m = marker.search(line) if marker else None
        if m and nxt:
            if self.stage == "command":
                self.rc = int(m.group(1))
                if m.start() > 0:  # the command's last line had no newline: the marker follows it on the line
                    self.output(line[:m.start()])
            self.stage = nxt
            return nxt
        if self.stage == "command":
            if not line.startswith("(XEN)"):  # the hypervisor's own messages are the log file's
                self.output(line)
        elif line.startswith(("XENEVT-RUNNER-ERROR", "XENEVT-RUNNER-DOMU", "XENEVT-RUNNER-INFO")):
            self.report(line)
        return None


class LogTail:
    """The serial console's log file as QEMU writes it: each call, the whole lines added since the last."""

    def __init__(self, log: str):
        self.log, self.pos, self.buf = log, 0, ""

    def lines(self) -> list[str]:
        with open(self.log, "rb") as f:
            f.seek(self.pos)
            chunk = f.read()
        self.pos += len(chunk)
        self.buf += chunk.decode(errors="replace")
        lines = self.buf.split("\n")
        self.buf = lines.pop()
        return [line.rstrip("\r") for line in lines]


def qemu_exited(stage: str, qemu: subprocess.Popen) -> StageFailed:
    """QEMU gone before ``stage`` ended: the stage's failure, with QEMU's last word."""
    said = (qemu.stdout.read() if qemu.stdout else b"").decode(errors="replace").strip().splitlines()
    return StageFailed(stage, f"QEMU exited (code {qemu.returncode}) before the stage ended"
                       + (f": {said[-1][:200]}" if said else ""))


def stop_qemu(qemu: subprocess.Popen) -> None:
    """QEMU stopped, whatever way out was taken: asked, then killed after 10 s."""
    if qemu.poll() is None:
        qemu.terminate()
        try:
            qemu.wait(10)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()


def boot(img: dict, cmd: list[str], log: str, limits: dict[str, float], console: Console,
         on_stage: Callable[[str, float], None]) -> float:
    """Run QEMU until dom0 powers off, feeding the console to ``console``; ``on_stage(stage, seconds)`` as
    each stage ends.  QEMU is stopped on every way out.  Returns the seconds from QEMU's start to the command."""
    open(log, "w").close()
    started = t_stage = time.monotonic()
    to_command = 0.0
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail = LogTail(log)
    try:
        while True:
            for line in tail.lines():
                was = console.stage
                if console.feed(line):
                    now = time.monotonic()
                    on_stage(was, now - t_stage)
                    t_stage = now
                    if console.stage == "command":
                        to_command = now - started
            if qemu.poll() is not None:
                if console.stage == "shutdown":
                    on_stage("shutdown", time.monotonic() - t_stage)
                    break
                raise qemu_exited(console.stage, qemu)
            if time.monotonic() - t_stage > limits[console.stage]:
                raise StageFailed(console.stage, f"timed out after {limits[console.stage]:.0f} s")
            time.sleep(0.1)
    finally:
        stop_qemu(qemu)
    return to_command
