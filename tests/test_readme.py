"""The README's quick examples (the fenced ``sh`` blocks from "Quick start" to "Using it from Python") run as
written on a fresh machine: a new HOME, no $XENEVT_STATE, no host anywhere, `xenevt` on PATH.  Every line must
exit 0 (bash -e), and the first command makes the default host as the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start, end = text.index("\n## Quick start"), text.index("\n## Using it from Python")
    return re.findall(r"\n```sh\n(.*?)\n```\n", text[start:end], flags=re.S)


def test_the_readme_has_quick_examples():
    blocks = quick_blocks()
    assert blocks and blocks[0].splitlines()[0].startswith("xenevt sim info")


def test_the_quick_examples_run_as_written_on_a_fresh_machine(tmp_path):
    bindir, home, cwd = tmp_path / "bin", tmp_path / "home", tmp_path / "work"
    for d in (bindir, home, cwd):
        d.mkdir()
    (bindir / "xenevt").write_text(f"#!/bin/sh\nexec {sys.executable} -m xenevt \"$@\"\n")
    (bindir / "xenevt").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XENEVT_", "XDG_"))}
    env.update(PATH=f"{bindir}:{env['PATH']}", HOME=str(home), XENEVT_BACKEND="sim")
    for block in quick_blocks():
        script = "set -eo pipefail\ntrap 'echo \"FAILED: $BASH_COMMAND\" >&2' ERR\n" + block + "\n"
        r = subprocess.run(["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-800:]}"
        assert "Traceback" not in r.stderr
    state = home / ".local" / "state" / "xenevt"
    assert (state / "host.xes").exists()  # made by the first command, where the README says
    assert "created a simulated host" in subprocess.run(
        ["bash", "-c", "rm -rf ~/.local/state/xenevt; xenevt sim info >/dev/null"], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=60).stderr


def test_a_named_state_folder_gets_no_host_unasked(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("XENEVT_")}
    named = tmp_path / "named"
    for argv in (["sim", "info"], ["list"]):
        r = subprocess.run([sys.executable, "-m", "xenevt", "--state", str(named), "-b", "sim", *argv], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "run `xenevt sim init` first" in r.stderr, r.stderr
    assert not (named / "host.xes").exists()
