"""``xenevt runner``: its parts on their own (fast), and real boots of Xen under QEMU (slow: a minute or more
each under TCG) running tests/runner_project, a libxenevtchn project that is not xenevt."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.test_xenci import read_newc
from xenevt.cli import main
from xenevt.runner import EXIT_RUNNER, StageFailed
from xenevt.runner.boot import Console, choose_accel, qemu_command
from xenevt.runner.build import run_archive
from xenevt.runner.fetch import cache_key
from xenevt.runner.image import cpio_newc, elf_kernel
from xenevt.runner.session import Options, run

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.join(HERE, "runner_project")

BOOT = """\
(XEN) Xen version 4.17.7 (Debian 4.17.7+13-g2445b30a44-0+deb12u1)
[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org)
[    1.3] xen:events: Using FIFO-based ABI
XENEVT-RUNNER-STAGE dom0-init
XENEVT-RUNNER-DOMU domu1 1
XENEVT-RUNNER-BEGIN
PASS bind-unbound: port 21
(XEN) 'e' pressed -> dumping event-channel info
FAIL consume: last event on port 21, expected 22
XENEVT-RUNNER-END rc=2
"""


def test_the_console_gives_stages_the_commands_output_and_its_exit_code():
    out, said = [], []
    c = Console(out.append, said.append)
    stages = [c.feed(line) for line in BOOT.splitlines()]
    assert [s for s in stages if s] == ["boot-dom0", "dom0-init", "command", "shutdown"]
    # only the command's lines, without the hypervisor's own
    assert out == ["PASS bind-unbound: port 21", "FAIL consume: last event on port 21, expected 22"]
    assert c.rc == 2 and said == ["XENEVT-RUNNER-DOMU domu1 1"]
    assert c.facts == {"xen": "4.17.7", "linux": "6.1.0-57-amd64", "abi": "FIFO"}


def test_a_last_line_without_newline_is_still_the_commands_output():
    out: list[str] = []
    c = Console(out.append, lambda s: None)
    c.stage = "command"
    assert c.feed("first") is None
    assert c.feed("install ok installedXENEVT-RUNNER-END rc=0") == "shutdown"
    assert out == ["first", "install ok installed"] and c.rc == 0


def test_a_crash_ends_the_run_naming_the_stage():
    c = Console(lambda line: None, lambda line: None)
    c.feed("[    0.0] Linux version 6.1.0-57-amd64")
    with pytest.raises(StageFailed, match="stage boot-dom0: crash on the console: .*Kernel panic"):
        c.feed("[    3.0] Kernel panic - not syncing: VFS: Unable to mount root fs")
    # the command's own words are not a crash; the hypervisor's are
    out: list[str] = []
    c = Console(out.append, lambda line: None)
    for line in BOOT.splitlines()[:6]:
        c.feed(line)
    c.feed("test_panic: checks that 'Kernel panic' is reported")
    assert out == ["test_panic: checks that 'Kernel panic' is reported"]
    with pytest.raises(StageFailed, match="stage command: crash on the console: .XEN. Hardware Dom0 crashed"):
        c.feed("(XEN) Hardware Dom0 crashed: rebooting machine in 5 seconds.")


def test_the_accelerator_is_chosen_and_said(monkeypatch):
    assert choose_accel("tcg") == ("tcg", "asked for")
    name, why = choose_accel("auto")
    assert name in ("tcg", "kvm") and why
    if name == "tcg":  # (this machine: a kvm_pvm /dev/kvm, or none) --accel kvm is refused, naming the reason
        with pytest.raises(StageFailed, match=re.escape(f"stage boot-xen: --accel kvm: {why}")):
            choose_accel("kvm")
    cmd = qemu_command({"xen": "X", "kernel": "K", "initrd": "I"}, "tcg", "L", "runner_domu=2")
    assert cmd[cmd.index("-cpu") + 1] == "qemu64" and cmd[-1].endswith("runner_domu=2,I")


def test_the_runs_archive_holds_the_project_with_its_times_xenevt_and_the_command(tmp_path):
    """What dom0 gets each run: /project (times kept, so make does not rebuild what the host built), xenevt
    with its metadata and /usr/bin/xenevt, the command quoted for sh."""
    base = _base_root()
    if base is None:
        pytest.skip("no runner root in the cache yet (xenevt runner fetch + one run make it)")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "Makefile").write_text("test:\n\ttrue\n")
    os.utime(proj / "Makefile", (1_000_000_000, 1_000_000_000))
    (proj / ".git").mkdir()
    dest = str(tmp_path / "run.cpio")
    run_archive(base, str(proj), ["sh", "-c", "echo 'a b'; exit 3"], dest, "build-initramfs", 300)
    with open(dest, "rb") as f:
        entries = read_newc(f.read())
    assert entries["project/Makefile"][1] == b"test:\n\ttrue\n"
    assert not any(n.startswith("project/.git") for n in entries)
    assert entries["runner/command"][1] == b"exec sh -c 'echo '\"'\"'a b'\"'\"'; exit 3'\n"
    assert "usr/lib/python3/dist-packages/xenevt/runner/session.py" in entries
    assert any(n.startswith("usr/lib/python3/dist-packages/xenevt/__pycache__/") for n in entries)
    assert any(n.endswith(".dist-info/METADATA") for n in entries) and "usr/bin/xenevt" in entries
    # the times: newc's mtime field is the sixth
    with open(dest, "rb") as f:
        data = f.read()
    at = data.index(b"project/Makefile\0") - 110
    assert int(data[at + 6 + 8 * 5: at + 6 + 8 * 6], 16) == 1_000_000_000


def _base_root() -> str | None:
    from xenevt.runner.fetch import default_cache

    roots = sorted(p for p in (os.listdir(default_cache()) if os.path.isdir(default_cache()) else [])
                   if p.startswith("runner-root-") and not p.endswith(".tmp"))
    return os.path.join(default_cache(), roots[-1]) if roots else None


def test_cpio_prefix_and_the_kernels_elf(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_text("x")
    buf = io.BytesIO()
    cpio_newc(str(tmp_path / "t"), buf, prefix="a/b")
    assert set(read_newc(buf.getvalue())) == {"a", "a/b", "a/b/f"}
    # a bzImage-like file: a header, then the xz payload of an ELF
    import lzma

    (tmp_path / "boot").mkdir()
    vmlinuz = tmp_path / "boot" / "vmlinuz-1"
    import struct

    elf = bytearray(b"\x7fELF\x02" + b"k" * 1000)
    struct.pack_into("<Q", elf, 0x28, 900)  # section headers at 900: 1 of 64 bytes, inside the image
    struct.pack_into("<HH", elf, 0x3A, 64, 1)
    vmlinuz.write_bytes(b"MZ" + b"\0" * 500 + lzma.compress(bytes(elf)) + b"\0" * 64)
    assert open(elf_kernel(str(vmlinuz)), "rb").read() == elf
    cut = tmp_path / "cut"  # an image whose section headers lie past its end is not taken
    cut.mkdir()
    struct.pack_into("<Q", elf, 0x28, 2000)
    (cut / "vmlinuz-3").write_bytes(b"MZ" + lzma.compress(bytes(elf)))
    assert elf_kernel(str(cut / "vmlinuz-3")) == str(cut / "vmlinuz-3")
    other = tmp_path / "other"
    other.mkdir()
    (other / "vmlinuz-2").write_bytes(b"MZ" + b"\0" * 100)
    assert elf_kernel(str(other / "vmlinuz-2")) == str(other / "vmlinuz-2")


def test_the_cache_key_follows_the_package_files_and_the_recipe():
    pk = {"root": ["/c/python3_3.11.2-1_amd64.deb"], "xen": "/c/xen_4.17.7_amd64.deb", "kernel": "/c/linux_6.1.deb"}
    assert cache_key(pk, "r1") == cache_key(dict(pk), "r1")
    assert cache_key(pk, "r1") != cache_key(pk, "r2")
    assert cache_key(pk, "r1") != cache_key(dict(pk, root=["/c/python3_3.11.2-2_amd64.deb"]), "r1")


@pytest.mark.parametrize(("argv", "said"), [
    (["runner", "run", "--xen", "4.21", "--", "true"], "'4.21' is not one of '4.17', '4.20'"),
    (["runner", "run", "--domu", "9", "--", "true"], "domU count 9 out of range 0..8"),
    (["runner", "run", "--project", "/nonexistent", "--", "true"], "'/nonexistent' does not exist"),
    (["runner", "run", "--timeout", "0", "--", "true"], "timeout 0 out of range 1..86400 s"),
    (["runner", "run", "--timeout", "nan", "--", "true"], "timeout 'nan' is not a finite number"),
    (["runner", "run"], "Missing argument 'COMMAND...'"),
])
def test_bad_usage_is_one_line_and_exit_2(capfd, argv, said):
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert said in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_stage_that_fails_is_named_and_exits_125(tmp_path, monkeypatch, capfd):
    """A cache the runner cannot write: the fetch stage fails, one line names it, exit 125 (not the command's)."""
    blocked = tmp_path / "file"
    blocked.write_text("")
    code = run(Options(command=["true"], project=str(tmp_path), cache=str(blocked / "cache"), accel="tcg",
                       log=str(tmp_path / "log")))
    assert code == EXIT_RUNNER
    err = capfd.readouterr().err
    assert "runner: FAILED: stage fetch:" in err or "runner: FAILED: stage build-initramfs:" in err, err


def _runner(args: list[str], tmp_path) -> subprocess.CompletedProcess[str]:
    if not shutil.which("qemu-system-x86_64") or not os.path.exists("/usr/include/xenevtchn.h"):
        pytest.skip("needs qemu-system-x86 and libxen-dev (the project is built on this host)")
    build = tmp_path / "project"
    shutil.copytree(PROJECT, build)
    subprocess.run(["make", "-s", "-C", str(build)], check=True)
    return subprocess.run([sys.executable, "-m", "xenevt", "runner", "run", "--project", str(build), "--log",
                           str(tmp_path / "console.log"), "--timeout", "300", *args], capture_output=True,
                          text=True, timeout=1800, cwd=tmp_path)


@pytest.mark.slow
def test_a_project_of_its_own_passes_its_test_on_real_xen(tmp_path):
    r = _runner(["--", "make", "test"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    # the command's own output, streamed, with its checks
    assert "PASS notify: 100 of 100 round trips" in r.stdout and "evtchn_check: all checks passed" in r.stdout
    assert "(XEN)" not in r.stdout
    for stage in ("fetch", "build-initramfs", "boot-xen", "boot-dom0", "dom0-init", "command", "shutdown"):
        assert f"runner: stage {stage}: " in r.stderr
    assert "boot to command" in r.stderr and "runner: accel tcg" in r.stderr or "runner: accel kvm" in r.stderr
    assert "XENEVT-RUNNER-BEGIN" in (tmp_path / "console.log").read_text(errors="replace")


@pytest.mark.slow
def test_a_failing_check_fails_the_run_with_its_exit_code_and_its_name(tmp_path):
    r = _runner(["--", "make", "test", "BREAK=1"], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]  # make's own code for a failed recipe
    assert "FAIL consume: last event on port" in r.stdout and "evtchn_check: FAILED" in r.stdout
    assert "runner: the command exited 2" in r.stderr


def test_the_dependency_walk_is_kept_until_apts_lists_change(tmp_path, monkeypatch):
    from xenevt.runner import fetch as f

    lists = tmp_path / "lists"
    lists.mkdir()
    apt = ["-o", f"Dir::State::Lists={lists}"]
    calls = []

    def apt_cache(cmd, stage, timeout, **kw):
        calls.append(cmd)
        kernel = cmd[-1] == "linux-image-amd64"
        out = "Depends: linux-image-6.1.0-57-amd64\n" if kernel else "python3\nperl\n  Depends: x\n"
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(f, "run", apt_cache)
    got = f.resolve(apt, "bookworm", ["python3"], {"perl"}, str(tmp_path), lambda: 10.0)
    assert got == (["python3", "python3-minimal"], "linux-image-6.1.0-57-amd64") and len(calls) == 2
    assert f.resolve(apt, "bookworm", ["python3"], {"perl"}, str(tmp_path), lambda: 10.0) == got
    assert len(calls) == 2  # kept
    os.utime(lists, ns=(1, 1))  # apt-get update rewrote the lists
    f.resolve(apt, "bookworm", ["python3"], {"perl"}, str(tmp_path), lambda: 10.0)
    assert len(calls) == 4


def test_a_second_run_waits_for_the_cache_and_says_so(tmp_path):
    import threading

    from xenevt.runner.session import cache_lock

    said: list[str] = []
    inside = threading.Event()

    def second() -> None:
        with cache_lock(str(tmp_path), said.append):
            inside.set()

    with cache_lock(str(tmp_path), said.append):
        t = threading.Thread(target=second)
        t.start()
        assert not inside.wait(0.5)  # held: the second waits
    t.join(10)
    assert inside.is_set() and said == [f"waiting for another run using the cache {tmp_path}"]


def test_completion_offers_the_runners_commands_and_choices():
    def complete(words: str) -> list[str]:
        env = dict(os.environ, _XENEVT_COMPLETE="bash_complete", COMP_WORDS=words,
                   COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)))
        r = subprocess.run([sys.executable, "-m", "xenevt"], env=env, capture_output=True, text=True, timeout=60)
        return [line.split(",", 1)[1] for line in r.stdout.splitlines()]

    assert complete("xenevt runner ") == ["accel", "fetch", "run"]
    assert complete("xenevt runner run --xen ") == ["4.17", "4.20"]
    assert complete("xenevt runner run --domu-abi ") == ["fifo", "2l"]


@pytest.mark.slow
def test_a_command_past_its_timeout_ends_the_run_with_124_naming_the_stage(tmp_path):
    r = _runner(["--timeout", "5", "--", "sh", "-c", "echo started; sleep 600"], tmp_path)
    assert r.returncode == 124, r.stderr[-2000:]
    assert "started" in r.stdout
    assert "runner: FAILED: stage command: timed out after 5 s (the command's timeout, --timeout)" in r.stderr


def _fake_deb(tmp_path, package: str = "xenevt", version: str = "0.1.0-1~deb12", depends: str = "") -> str:
    """A small Debian package made with dpkg-deb: the runner's checks read its fields, dom0's dpkg installs it."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    root = tmp_path / f"src-{package}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: amd64\nMaintainer: t <t@example.org>\n"
        + (f"Depends: {depends}\n" if depends else "") + "Description: a test package\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "xenevt").write_text("#!/bin/sh\necho \"xenevt from the test package\"\n")
    (root / "usr" / "bin" / "xenevt").chmod(0o755)
    out = tmp_path / f"{package}_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(out)], check=True, capture_output=True)
    return str(out)


def test_deb_is_checked_to_be_xenevt_built_for_the_xen_asked(tmp_path, capfd):
    """--deb: a file that is no package, another package, or xenevt built for the other Debian is a usage error
    naming it (exit 2), before anything is fetched; the right one passes the check."""
    from xenevt.runner.fetch import RELEASE_TAGS, deb_for

    text = tmp_path / "notes.deb"
    text.write_text("not a package")
    cases = [([str(text)], "not a Debian package"),
             ([_fake_deb(tmp_path, package="other")], "package 'other', not xenevt"),
             ([_fake_deb(tmp_path, version="0.1.0-1~deb13")], "is not built for Xen 4.17's Debian (bookworm, ~deb12)")]
    for deb, said in cases:
        assert main(["runner", "run", "--deb", deb[0], "--", "true"]) == 2
        err = capfd.readouterr().err
        assert said in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert deb_for("4.20", cases[2][0][0]) == "0.1.0-1~deb13"
    sys.path.insert(0, os.path.join(HERE, "..", "ci"))
    import deb as ci_deb

    assert ci_deb.SUITES == RELEASE_TAGS  # (ci/deb.py's suffixes are the ones the runner checks)


def test_the_runs_archive_with_deb_holds_the_package_not_this_xenevt(tmp_path):
    deb = _fake_deb(tmp_path)
    dest = tmp_path / "run.cpio"
    run_archive("/nonexistent-base", PROJECT, ["xenevt", "--version"], str(dest), "build-initramfs", 60, deb)
    files = read_newc(dest.read_bytes())
    assert "runner/xenevt.deb" in files and "runner/command" in files
    assert not any(name.startswith("usr/lib/python3/dist-packages/xenevt") for name in files)


@pytest.mark.slow
def test_a_deb_is_installed_in_dom0_with_dpkg_and_a_broken_one_fails_the_run(tmp_path):
    """On real Xen under QEMU: dom0 installs the --deb package with Debian's dpkg (its database records the
    root's packages) and the command runs the installed one; a package whose dependency dom0 lacks fails the
    run at dom0-init, naming dpkg, exit 125, and the command never runs."""
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs qemu-system-x86")

    def runner(deb: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "xenevt", "runner", "run", "--deb", deb, "--project",
                               str(tmp_path), "--log", str(tmp_path / "console.log"), "--timeout", "300", "--",
                               "sh", "-c", "xenevt; dpkg-query -W -f '${Status}' xenevt"],
                              capture_output=True, text=True, timeout=1800, cwd=tmp_path)

    r = runner(_fake_deb(tmp_path, depends="python3 (>= 3), libc6"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "xenevt from the test package" in r.stdout and "install ok installed" in r.stdout, r.stdout
    assert "runner: xenevt 0.1.0-1~deb12 installed in dom0 from the --deb package" in r.stderr
    r = runner(_fake_deb(tmp_path, version="0.2.0-1~deb12", depends="no-such-package-here"))
    assert r.returncode == EXIT_RUNNER, r.stderr[-2000:]
    assert "stage dom0-init: dpkg -i of the --deb package failed" in r.stderr
    assert "xenevt from the test package" not in r.stdout


def _stand_ins(monkeypatch, outcomes: list):
    """The runner with its fetch, build and boot stood in for: each boot raises its outcome or plays a console."""
    from xenevt.runner import session

    boots = []

    def boot(img, cmd, log, limits, console, stage_done):
        boots.append(log)
        with open(log, "w") as f:
            f.write(f"boot {len(boots)}\n")
        got = outcomes[len(boots) - 1]
        if isinstance(got, Exception):
            raise got
        for line in got:
            console.feed(line)
        return 1.0

    monkeypatch.setattr(session, "choose_accel", lambda accel: ("tcg", "asked"))
    monkeypatch.setattr(session, "fetch", lambda *a, **kw: {})
    monkeypatch.setattr(session, "build", lambda *a, **kw: {"xen": "xen.gz", "kernel": "vmlinuz", "initrd": "initrd"})
    monkeypatch.setattr(session, "boot", boot)
    return boots


RAN = ["Xen version 4.20.1 (x)", "Linux version 6.12.1", "XENEVT-RUNNER-STAGE dom0-init", "XENEVT-RUNNER-BEGIN",
       "ok from the command", "XENEVT-RUNNER-END rc=0"]


@pytest.mark.parametrize("stage", ["boot-xen", "boot-dom0"])
def test_a_boot_that_crashes_before_dom0s_init_is_booted_once_more(tmp_path, monkeypatch, stage):
    crash = StageFailed(stage, "crash on the console: [    2.6] Kernel panic - not syncing: Fatal exception")
    boots = _stand_ins(monkeypatch, [crash, RAN])
    said, out = [], []
    log = str(tmp_path / "console.log")
    code = run(Options(command=["true"], project=str(tmp_path), cache=str(tmp_path / "cache"), accel="tcg",
                       log=log), output=out.append, report=said.append)
    assert code == 0 and len(boots) == 2 and out == ["ok from the command"]
    assert f"stage {stage}: crash on the console: [    2.6] Kernel panic - not syncing: Fatal exception: before " \
        f"dom0's /init, so before the command ran; booting once more (the first boot's console: {log}.first-boot)" \
        in said
    assert open(f"{log}.first-boot").read() == "boot 1\n" and open(log).read() == "boot 2\n"


def test_a_crash_once_dom0_runs_or_twice_is_the_runs_failure(tmp_path, monkeypatch):
    crash = StageFailed("boot-dom0", "crash on the console: Oops")
    for outcomes, tries in (([StageFailed("dom0-init", "crash on the console: Oops")], 1), ([crash, crash], 2)):
        boots, said = _stand_ins(monkeypatch, outcomes), []
        code = run(Options(command=["true"], project=str(tmp_path), cache=str(tmp_path / "cache"), accel="tcg",
                           log=str(tmp_path / "console.log")), output=lambda line: None, report=said.append)
        assert code == EXIT_RUNNER and len(boots) == tries
        assert said[-1].startswith(f"FAILED: {outcomes[-1]}")
