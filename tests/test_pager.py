"""The pager, as git's: text views longer than the terminal go through $PAGER, on a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from xenevt.cli.pager import Paged, command, maybe_page
from xenevt.sim.host import SimHost, create_host


def run_on_tty(args: list[str], env: dict, rows: int = 10, cols: int = 80, timeout: float = 60) -> tuple[int, bytes]:
    """``xenevt ARGS`` with stdout, stdin and stderr on a pseudo-terminal of ``rows`` x ``cols``: (exit code, what
    the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "xenevt", *args], stdin=slave, stdout=slave, stderr=slave, env=env,
                         close_fds=True)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif p.poll() is not None:
                break
        code = p.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    return code, shown.replace(b"\r\n", b"\n")


@pytest.fixture
def host(tmp_path):
    """dom0 with 20 open ports (a list longer than a 10-line terminal; 5 wait for a domain that does not exist,
    which doctor reports in 15 lines), dom1 with 15."""
    d = str(tmp_path / "h")
    create_host(d)
    with SimHost(d) as h:
        for _ in range(15):
            h.bind_interdomain(0, 0, 1, h.alloc_unbound(1, 1, 0))
        for _ in range(5):
            h.alloc_unbound(0, 0, 7)
    return d


def env_for(state: str, tmp_path, pager: str | None = None, **more) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PAGER", "XENEVT_PAGER", "LESS", "LINES", "COLUMNS",
                                                             "NO_COLOR", "FORCE_COLOR")}
    env.update(XENEVT_STATE=state, XENEVT_BACKEND="sim", TERM="xterm")
    if pager is not None:
        env["XENEVT_PAGER"] = pager
    env.update(more)
    return env


def plain(args: list[str], state: str) -> bytes:
    """What the command writes to a pipe (no terminal: never a pager)."""
    return subprocess.run([sys.executable, "-m", "xenevt", *args], capture_output=True,
                          env=dict(os.environ, XENEVT_STATE=state, XENEVT_BACKEND="sim")).stdout


@pytest.mark.parametrize("args", [["list"], ["dump"], ["doctor"]])
def test_long_text_views_go_through_the_pager_whole(host, tmp_path, args):
    got = tmp_path / "paged.txt"
    code, shown = run_on_tty(args, env_for(host, tmp_path, f"cat > {got}", NO_COLOR="1"))
    assert code in (0, 3), shown
    assert got.read_bytes() == plain(args, host)  # every byte, through the pager, and nothing on the terminal
    assert shown == b""


def test_short_output_and_no_pager_cases_write_to_the_terminal(host, tmp_path):
    got = tmp_path / "paged.txt"
    want = plain(["status", "1"], host)
    code, shown = run_on_tty(["status", "1"], env_for(host, tmp_path, f"cat > {got}", NO_COLOR="1"))
    assert (code, shown, got.exists()) == (0, want, False)  # 6 lines on a 10-line terminal: no pager
    want = plain(["list"], host)
    for args, pager in ((["--no-pager", "list"], f"cat > {got}"), (["list"], "cat"), (["list"], "")):
        code, shown = run_on_tty(args, env_for(host, tmp_path, pager, NO_COLOR="1"))
        assert (code, shown, got.exists()) == (0, want, False), (args, pager)
    code, shown = run_on_tty(["--json", "list"], env_for(host, tmp_path, f"cat > {got}"))
    assert code == 0 and not got.exists() and shown == plain(["--json", "list"], host)
    # PAGER is honoured when XENEVT_PAGER is not set
    env = env_for(host, tmp_path, None, PAGER=f"cat > {got}", NO_COLOR="1")
    assert run_on_tty(["list"], env)[0] == 0 and got.read_bytes() == want


def test_the_pager_gets_rows_while_they_are_still_being_written(tmp_path):
    """Once the held text outgrows the terminal the pager runs, and later rows are streamed to it."""
    out = tmp_path / "p.txt"
    term = io.StringIO()
    paged = Paged(term, f"cat > {out}", rows=5, cols=80)
    for i in range(3):
        paged.write(f"line {i}\n")
    assert paged.proc is None
    paged.write("a line long enough to wrap twice on an 80-column terminal " * 3 + "\n")
    assert paged.proc is not None  # 3 + 3 terminal lines: more than 5
    paged.write("".join(f"row {i}\n" for i in range(10_000)))
    paged.flush()
    deadline = time.monotonic() + 10
    while out.stat().st_size < 40_000 and time.monotonic() < deadline:  # the pager has rows before the end
        time.sleep(0.05)
    assert out.stat().st_size >= 40_000 and paged.proc.poll() is None
    paged.write("the end\n")
    paged.close()
    assert out.read_text().endswith("row 9999\nthe end\n") and term.getvalue() == ""


def test_short_text_is_written_as_it_is_and_no_pager_starts(tmp_path):
    term = io.StringIO()
    paged = Paged(term, f"cat > {tmp_path / 'p.txt'}", rows=5, cols=80)
    paged.write("one\ntwo\n")
    paged.close()
    assert term.getvalue() == "one\ntwo\n" and paged.proc is None and not (tmp_path / "p.txt").exists()


def test_pager_choice(monkeypatch):
    for var in ("XENEVT_PAGER", "PAGER"):
        monkeypatch.delenv(var, raising=False)
    assert command() == "less -FRX"
    monkeypatch.setenv("PAGER", "more")
    assert command() == "more"
    monkeypatch.setenv("XENEVT_PAGER", "cat")
    assert command() is None
    monkeypatch.setenv("XENEVT_PAGER", "")
    assert command() is None
    assert maybe_page(io.StringIO()) is None  # not a terminal: never


def test_colours_reach_the_pager_as_rich_wrote_them(host, tmp_path):
    """On a terminal the views are coloured as they were with rich (less -R shows them); the text is the same."""
    import re

    got = tmp_path / "paged.txt"
    code, _ = run_on_tty(["doctor"], env_for(host, tmp_path, f"cat > {got}"))
    text = got.read_bytes()
    assert code == 3 and b"\x1b[33mWARNING \x1b[0md0:" in text
    assert re.sub(rb"\x1b\[[0-9;]*m", b"", text) == plain(["doctor"], host)
