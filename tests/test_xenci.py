"""The nested Xen runner's own logic, fast: the cpio writer and the console reader."""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import os
import shutil
import stat

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("xenci", os.path.join(HERE, "..", "ci", "xen", "xenci.py"))
xenci = importlib.util.module_from_spec(spec)
spec.loader.exec_module(xenci)


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """A newc reader (the kernel's format): name -> (mode, data)."""
    out, off = {}, 0
    while True:
        assert data[off:off + 6] == b"070701", off
        fields = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off: off + size]
        off += size
        off += -off % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_cpio_newc_holds_files_links_and_dirs(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "busybox").write_bytes(b"\x7fELF" + b"x" * 13)
    os.chmod(tmp_path / "bin" / "busybox", 0o755)
    os.symlink("busybox", tmp_path / "bin" / "sh")
    (tmp_path / "init").write_text("#!/bin/sh\n")
    buf = io.BytesIO()
    xenci.cpio_newc(str(tmp_path), buf)
    entries = read_newc(buf.getvalue())
    assert stat.S_ISDIR(entries["bin"][0])
    assert entries["bin/busybox"] == (stat.S_IFREG | 0o755, b"\x7fELF" + b"x" * 13)
    assert entries["bin/sh"] == (stat.S_IFLNK | 0o777, b"busybox")
    assert entries["init"][1] == b"#!/bin/sh\n"
    assert len(gzip.compress(buf.getvalue())) > 0


CONSOLE = """\
(XEN) Xen version 4.17.5+72-g01140da4e8 (Debian 4.17.5+72-g01140da4e8-1) (pkg-xen-devel@lists.alioth.debian.org)
[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14))
[    1.342789] xen:events: Using FIFO-based ABI
XENCI-STAGE dom0-init
XENCI-BEGIN
tests/test_on_xen.py::test_a PASSED                                     [ 50%]
tests/test_on_xen.py::test_b (XEN) 'e' pressed -> dumping event-channel info
(XEN) Event channel information for domain 0:
FAILED                                                                  [100%]
=========================== short test summary info ============================
PASSED tests/test_on_xen.py::test_a
FAILED tests/test_on_xen.py::test_b - AssertionError: assert 1 == 2
XENCI-SUMMARY rc=1
"""


def test_console_watcher_reads_stages_versions_and_results():
    w = xenci.ConsoleWatcher(report=lambda s: None)
    stages = [w.feed(line) for line in CONSOLE.splitlines()]
    assert [s for s in stages if s] == ["boot-dom0", "dom0-init", "tests", "shutdown"]
    f = w.facts
    assert (f["xen"], f["linux"], f["abi"], f["rc"]) == ("4.17.5+72-g01140da4e8", "6.1.0-50-amd64", "FIFO", 1)
    # test_b's progress line was split by the hypervisor's output: the summary still names it
    assert sorted(w.results()) == [("FAILED", "tests/test_on_xen.py::test_b"),
                                   ("PASSED", "tests/test_on_xen.py::test_a")]
    assert f["reasons"]["tests/test_on_xen.py::test_b"] == "AssertionError: assert 1 == 2"


def test_console_watcher_stops_on_a_crash_naming_the_stage():
    w = xenci.ConsoleWatcher(report=lambda s: None)
    w.feed("[    0.1] Linux version 6.1.0-50-amd64")
    with pytest.raises(xenci.StageFailed, match="stage boot-dom0: crash on the console: .*Hardware Dom0 crashed"):
        w.feed("(XEN) Hardware Dom0 crashed: rebooting machine in 5 seconds.")


def _booted(outcomes: list):
    """A stand-in for boot_and_test: each call raises its outcome or feeds the console lines it names."""
    calls = []

    def boot(img, args, w, out):
        calls.append(out)
        with open(os.path.join(out, "console.log"), "w") as f:
            f.write(f"boot {len(calls)}\n")
        got = outcomes[len(calls) - 1]
        if isinstance(got, Exception):
            raise got
        for line in got.splitlines():
            w.feed(line)
    return boot, calls


@pytest.mark.parametrize("stage", ["boot-xen", "boot-dom0"])
def test_a_boot_that_crashes_before_dom0s_init_is_booted_once_more_and_said(tmp_path, monkeypatch, capsys, stage):
    passing = CONSOLE.replace("FAILED tests/test_on_xen.py::test_b - AssertionError: assert 1 == 2",
                              "PASSED tests/test_on_xen.py::test_b").replace("rc=1", "rc=0")
    crash = xenci.StageFailed(stage, "crash on the console: [    2.6] Kernel panic - not syncing: Fatal exception")
    boot, calls = _booted([crash, passing])
    monkeypatch.setattr(xenci, "boot_and_test", boot)
    monkeypatch.setattr(xenci, "OUT_TOP", str(tmp_path))
    ok, line = xenci.finish("4.20", {"xen": "x"}, None, 0.0, argparse.Namespace())
    assert ok and len(calls) == 2
    assert line.endswith(f"[booted twice: the first boot's stage {stage}: crash on the console: [    2.6] Kernel "
                         "panic - not syncing: Fatal exception]")
    assert open(tmp_path / "4.20" / "console-first-boot.log").read() == "boot 1\n"
    assert open(tmp_path / "4.20" / "console.log").read() == "boot 2\n"


def test_a_failure_once_dom0_runs_or_a_second_boot_crash_is_not_retried(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(xenci, "OUT_TOP", str(tmp_path))
    crash = xenci.StageFailed("boot-dom0", "crash on the console: Oops")
    for outcomes, tries in (([xenci.StageFailed("tests", "timed out after 2700 s")], 1),
                            ([xenci.StageFailed("dom0-init", "crash on the console: Oops")], 1), ([crash, crash], 2)):
        boot, calls = _booted(outcomes)
        monkeypatch.setattr(xenci, "boot_and_test", boot)
        ok, line = xenci.finish("4.17", {"xen": "x"}, None, 0.0, argparse.Namespace())
        assert not ok and len(calls) == tries, line
        assert line.endswith(f"[{outcomes[-1]}]")


def test_scenario_verdicts_are_counted():
    w = xenci.ConsoleWatcher(report=lambda msg: None)
    for line in ["XENCI-SCENARIO identical bind-virq-twice", "XENCI-SCENARIO different close-peer",
                 "XENCI-SCENARIO identical status-unbound"]:
        w.feed(line)
    assert w.facts["scenarios"] == {"bind-virq-twice": "identical", "close-peer": "different",
                                    "status-unbound": "identical"}


def test_bench_figures_are_kept_once_and_the_only_filter_is_an_identifier():
    w = xenci.ConsoleWatcher(report=lambda msg: None)
    line = "XENCI-BENCH notify->deliver: xenevt 40 us, C 30 us (1.33x, goal <= 1.5x)"
    for text in (line, "some output", line):  # -rA prints a passed test's output a second time
        w.feed(text)
    assert w.facts["bench"] == [line[len("XENCI-BENCH "):]]
    assert xenci._test_name("test_storm") == "test_storm"
    with pytest.raises(argparse.ArgumentTypeError):
        xenci._test_name("a or b")


def test_a_failed_tests_own_account_is_taken_from_the_console(tmp_path):
    """CI shows only xenci's output: a failed test's E lines and what it printed come from the console file,
    and a test that passed contributes nothing."""
    log = tmp_path / "console.log"
    log.write_text("(XEN) noise\n"
                   "=================================== FAILURES ===================================\n"
                   "______________________ test_storm[x] ______________________\n"
                   ">       assert rc == 3, findings\n"
                   "E       AssertionError: [{'rule': 'event-storm', 'ports': [29]}]\n"
                   "tests/test_on_xen.py:650: AssertionError\n"
                   "----------------------------- Captured stdout call -----------------------------\n"
                   "domU 2 sent 4000; doctor rc 4\n"
                   "______________________ test_other ______________________\n"
                   "E       not this one\n"
                   "=========================== short test summary info ============================\n")
    got = xenci.failure_details(str(log), ["tests/test_on_xen.py::test_storm[x]"])
    assert got[0] == "why test_storm[x] failed:"
    assert any("AssertionError: [{'rule': 'event-storm'" in ln for ln in got)
    assert any("doctor rc 4" in ln for ln in got)
    assert not any("not this one" in ln for ln in got)
    assert xenci.failure_details(str(tmp_path / "absent"), ["x"]) == []
    log.write_text("= ERRORS =\n____ ERROR at setup of test_g[a] ____\nE   GuestRunError: no END after 240 s\n")
    assert xenci.failure_details(str(log), ["tests/test_scenarios.py::test_g[a]"])[1].strip().endswith("240 s")


def test_a_file_from_dom0_is_put_back_together_and_checked(tmp_path):
    from tests.console_file import console_lines

    data = b"# HELP xenevt_ports Open event channels by state.\n# TYPE xenevt_ports gauge\n" + b"".join(
        b'xenevt_ports{domain="%d",state="interdomain"} %d.0\n' % (d, d) for d in range(400))
    lines = console_lines("exporter.prom", data)
    assert len(lines) > 3
    w = xenci.ConsoleWatcher(report=lambda msg: None)
    for line in lines + ["(XEN) noise", *lines]:  # (-rA prints a passed test's output again)
        w.feed(line)
    assert w.facts["files"] == {"exporter.prom": data}
    said, bad = xenci.check_files(w.facts["files"], str(tmp_path))
    assert (tmp_path / "exporter.prom").read_bytes() == data and not bad
    if shutil.which("promtool"):
        assert said == ["promtool check metrics: exporter.prom ok (400 series)"]
    # a line lost, and a line damaged: each one reason, never a file
    for broken in (lines[:1] + lines[2:], [lines[0][:-4] + "AAAA", *lines[1:]]):
        w = xenci.ConsoleWatcher(report=lambda msg: None)
        for line in broken:
            w.feed(line)
        why = w.facts["files"]["exporter.prom"]
        assert isinstance(why, str) and "exporter.prom from dom0 unreadable" in why, why
        assert xenci.check_files(w.facts["files"], str(tmp_path))[1] == [why]
    # what promtool refuses fails the run, naming the file
    if shutil.which("promtool"):
        said, bad = xenci.check_files({"bad.prom": b"xenevt_ports{domain=\"0\"} x\n"}, str(tmp_path))
        assert bad and bad[0].startswith("promtool check metrics bad.prom:")


def fake_apt(debs_made: list, overlaps: list, slow: float = 0.3):
    """xenci.run for fetch's apt commands: policy and depends answer at once; a download is slow and writes its
    .debs a byte at a time, noting any other download running at the same moment (two runs' apt clashing)."""
    import threading
    import time

    busy = threading.Lock()

    def run(cmd, stage, timeout, **kw):
        text = " ".join(cmd)
        out = ""
        if "policy" in cmd:
            out = "xen-hypervisor:\n  Candidate: 4.17\n"
        elif "depends" in cmd and "--recurse" in cmd:
            out = "busybox\n  Depends: libc6\nlibc6\npython3\n"
        elif "depends" in cmd:
            out = "linux-image-amd64\n  Depends: linux-image-6.1.0-9-amd64\n"
        elif "download" in text:
            if not busy.acquire(blocking=False):
                overlaps.append(text)
                busy.acquire()
            try:
                for name in cmd[cmd.index("download") + 1:]:
                    path = os.path.join(kw["cwd"], f"{name}_1_amd64.deb")
                    with open(path, "wb") as f:
                        f.write(b"!")
                        f.flush()
                        time.sleep(slow / 8)
                        f.write(b"<arch>\n")
                    debs_made.append(name)
            finally:
                busy.release()
        return argparse.Namespace(stdout=out, stderr="", returncode=0)

    return run


def test_two_runs_fill_the_package_cache_one_after_the_other(tmp_path, monkeypatch, capsys):
    """Two runs' fetches at once (threads: flock locks conflict between two opens in one process as between
    processes): the second waits for the first, says so, then finds every package cached."""
    import threading

    made, overlaps = [], []
    from xenevt.runner import fetch as runner_fetch

    monkeypatch.setattr(xenci, "CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runner_fetch, "run", fake_apt(made, overlaps))  # (xenci's fetch is the runner's)
    monkeypatch.setattr(runner_fetch, "host_suite", lambda: "bookworm")
    monkeypatch.setattr(xenci.shutil, "which", lambda name: f"/usr/bin/{name}")
    results: list = []
    errors: list = []

    def one() -> None:
        try:
            results.append(xenci.fetch("4.17", 60))
        except Exception as e:  # (a clash would surface here)
            errors.append(e)

    runs = [threading.Thread(target=one) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(60)
    assert not errors and not overlaps
    assert len(results) == 2 and results[0] == results[1]
    assert sorted(made) == sorted(set(made))  # every package downloaded once: the second run found them cached
    assert all(open(d, "rb").read() == b"!<arch>\n" for d in results[0]["root"])
    out = capsys.readouterr().out
    assert out.count("fetch: waiting for the package cache") == 1 and "packages cached in" in out


def test_a_cache_lock_held_too_long_is_one_stage_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(xenci, "CACHE", str(tmp_path))
    with xenci.cache_lock("fetch"):
        with pytest.raises(xenci.StageFailed, match=r"stayed locked by pid \d+ for 0 s"):
            with xenci.cache_lock("build-initramfs", patience=0.1, poll=0.05):
                pass
    with xenci.cache_lock("build-initramfs", patience=0.1):  # given back: taken at once
        pass


def test_an_extraction_keeps_a_tree_another_run_put_in_place_first(tmp_path, monkeypatch):
    """Each run unpacks into its own temporary tree; one finishing after another's keeps the first's."""
    dest = str(tmp_path / "rootfs-x")
    calls = []

    def dpkg(cmd, stage, timeout, **kw):
        calls.append(cmd[-1])
        if len(calls) == 1:  # another run's whole extraction, between this one's start and its rename
            os.makedirs(dest)
            open(os.path.join(dest, "theirs"), "w").close()
        open(os.path.join(cmd[-1], "ours"), "w").close()

    from xenevt.runner import image

    monkeypatch.setattr(image, "run", dpkg)  # (xenci's extraction is the runner's)
    xenci._extract(["a.deb"], dest, "build-initramfs", 10)
    assert os.listdir(dest) == ["theirs"] and os.listdir(tmp_path) == ["rootfs-x"]
    assert calls[0].endswith(f".tmp{os.getpid()}")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_dom0s_dpkg_database_records_what_is_there_and_nothing_it_would_refuse(tmp_path):
    """The trimmed root's dpkg status (xenevt/runner/image.py's dpkg_status, xen-ci's and the runner's): a
    package recorded installed with its own fields and files; a dependency only a deliberately left-out package
    meets (perl here) taken out of its record; a package needing something neither there nor left out on purpose
    not recorded, and one needing that package not either."""

    def deb(name: str, depends: str = "", files: tuple[str, ...] = ()) -> str:
        root = tmp_path / f"src-{name}"
        (root / "DEBIAN").mkdir(parents=True)
        control = f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        control += f"Depends: {depends}\n" if depends else ""
        (root / "DEBIAN" / "control").write_text(control + "Description: test\n")
        for f in files:
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            (root / f).write_text(name)
        out = tmp_path / f"{name}_1.0_all.deb"
        xenci.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(out)], "test", 60)
        return str(out)

    debs = [deb("alpha", "beta (>= 1), libzeta:any | beta", ("usr/share/alpha/a",)),
            deb("beta", "perl (>= 5), debconf | debconf-2.0"),
            deb("gamma", "nowhere"), deb("delta", "gamma")]
    tree = tmp_path / "root"
    xenci.image.dpkg_status(debs, str(tree), frozenset({"perl", "debconf"}), "test", 60)
    status = (tree / "var" / "lib" / "dpkg" / "status").read_text()
    stanzas = {s.split("\n", 1)[0].removeprefix("Package: "): s for s in status.strip().split("\n\n")}
    assert set(stanzas) == {"alpha", "beta"}, status
    assert "Status: install ok installed" in stanzas["alpha"] and "Depends: beta (>= 1), libzeta:any | beta" \
        in stanzas["alpha"]
    assert "Depends" not in stanzas["beta"], stanzas["beta"]  # (perl and debconf: left out of the root on purpose)
    listed = (tree / "var" / "lib" / "dpkg" / "info" / "alpha.list").read_text().split()
    assert "/usr/share/alpha/a" in listed
