"""A pager where a person reads, as git does: a text view longer than the terminal goes through $PAGER.

Only when stdout is a terminal, never for --json or raw bytes; ``XENEVT_PAGER``, then ``PAGER``, else
``less -FRX`` (``LESS=FRX`` is set for a bare ``less``, as git sets it); ``--no-pager``, an empty pager or
``cat`` writes to the terminal itself.  The text is held until it is longer than the terminal: shorter
output is written as it is, with no pager started; longer output starts the pager, hands it what was held
and then streams the rest into it as it is produced (a host's 40,000 rows are not built first).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import TextIO

DEFAULT = "less -FRX"


def command() -> str | None:
    """The pager to run, or None for none (``cat``, or set empty)."""
    for var in ("XENEVT_PAGER", "PAGER"):
        if var in os.environ:
            cmd = os.environ[var].strip()
            break
    else:
        cmd = DEFAULT
    return None if cmd in ("", "cat") else cmd


def terminal_size(stream) -> tuple[int, int] | None:
    """(rows, columns) of the terminal ``stream`` writes to, or None when it is not a terminal."""
    try:
        if not stream.isatty():
            return None
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    rows = int(os.environ["LINES"]) if os.environ.get("LINES", "").isdigit() else size.lines
    cols = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else size.columns
    return max(rows, 1), max(cols, 1)


class Paged:
    """A text stream that holds what is written until it outgrows ``rows`` terminal lines of ``cols``
    columns, then starts ``cmd`` and streams into it; ``close()`` writes what is held to ``stream`` (short
    output: no pager) or ends the pager's input and waits for the pager (the person reading) to quit."""

    def __init__(self, stream, cmd: str, rows: int, cols: int):
        self.stream, self.cmd, self.rows, self.cols = stream, cmd, rows, cols
        self.held: list[str] = []
        self.lines = 0
        self.partial = 0  # columns of the unfinished last line
        self.proc: subprocess.Popen | None = None
        self.pipe: TextIO | None = None
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return True  # (a person reads it)

    def write(self, s: str) -> int:
        if self.pipe is not None:
            return self.pipe.write(s)
        self.held.append(s)
        self._count(s)
        if self.lines >= self.rows:
            self._start()
        return len(s)

    def _count(self, s: str) -> None:
        """Terminal lines the held text fills, a long line wrapping (escape sequences counted, erring long)."""
        *done, last = s.split("\n")
        for part in done:
            width = self.partial + len(part)
            self.lines += max(1, -(-width // self.cols))
            self.partial = 0
            if self.lines >= self.rows:
                return
        self.partial += len(last)

    def _start(self) -> None:
        env = dict(os.environ)
        env.setdefault("LESS", "FRX")  # what git sets: quit if one screen, keep colours, leave the text on screen
        env.setdefault("LV", "-c")
        try:
            self.proc = subprocess.Popen(self.cmd, shell=True, stdin=subprocess.PIPE, env=env)
        except OSError:
            self.proc = None  # no pager after all: the terminal itself
            self.pipe = self.stream
        else:
            assert self.proc.stdin is not None  # (stdin=PIPE)
            self.pipe = io.TextIOWrapper(self.proc.stdin, encoding=self.encoding, errors="replace")
        held, self.held = "".join(self.held), []
        self.pipe.write(held)

    def flush(self) -> None:
        if self.pipe is not None:
            self.pipe.flush()

    def close(self) -> None:
        """Short output to the terminal; else end the pager's input and wait until it quits."""
        if self.pipe is None:
            self.stream.write("".join(self.held))
            self.held = []
            self.stream.flush()
            return
        if self.proc is None:
            self.stream.flush()
            return
        try:
            self.pipe.close()
        except (BrokenPipeError, ValueError):  # the reader quit before the end: not an error
            pass
        while True:
            try:
                self.proc.wait()
                break
            except KeyboardInterrupt:  # ^C reaches the pager too; it decides when to quit
                continue


def maybe_page(stream=None) -> Paged | None:
    """A Paged stream over stdout when a person reads it and a pager is configured, else None."""
    stream = stream or sys.stdout
    size = terminal_size(stream)
    cmd = command()
    if size is None or cmd is None:
        return None
    return Paged(stream, cmd, *size)
