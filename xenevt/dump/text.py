"""Plain text out, for the text views: lines in ANSI styles where a terminal shows colour, and tables written as
their rows come.  No rich and nothing of the dump model, so ``list`` imports only this."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from itertools import islice

# the styles the text views use, as rich writes them (SGR parameters), so a terminal shows what it did with rich
_SGR = {"bold": "1", "dim": "2", "red": "31", "yellow": "33", "cyan": "36", "bold red": "1;31", "bold cyan": "1;36",
        "bold magenta": "1;35"}


def color_wanted(file) -> bool:
    """Colour as rich decides it: a terminal (or FORCE_COLOR), unless NO_COLOR or TERM=dumb."""
    env = os.environ
    if env.get("NO_COLOR") or env.get("TERM", "") in ("dumb", "unknown"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed
        return False


class TextOut:
    """Lines of plain text to a file (a text view's output, no rich), in ANSI styles where ``color``."""

    def __init__(self, file, color: bool = False):
        self.file = file
        self.color = color
        self.write = file.write

    def styled(self, text: str, style: str | None) -> str:
        return f"\x1b[{_SGR[style]}m{text}\x1b[0m" if style and self.color else text

    def line(self, text: str = "", style: str | None = None, tail: str = "", tail_style: str | None = None) -> None:
        """``text`` (in ``style``) then ``tail`` (in ``tail_style``), and a newline."""
        self.file.write(self.styled(text, style) + self.styled(tail, tail_style) + "\n")

    def flush(self) -> None:
        self.file.flush()


def stream_table(write: Callable[[str], object], header: tuple[str, ...], rows: Iterable[tuple[str, ...]],
                 right: tuple[str, ...] = (), indent: str = "", sample: int = 256, chunk: int = 512) -> None:
    """Write rows as they come, not one table built in memory (a host's 40,000 ports): column widths from the
    header and the first ``sample`` rows (a longer cell later just pushes its line wider), two spaces between
    columns, the last column unpadded.  Plain text: cells carry no markup.  Written ``chunk`` rows at a time."""
    it = iter(rows)
    head: list[tuple[str, ...]] = []
    for row in it:
        head.append(row)
        if len(head) >= sample:
            break
    widths = [max([len(h)] + [len(r[i]) for r in head]) for i, h in enumerate(header)]
    last = len(header) - 1
    # one format per row (str.format in C), not a padding call per cell
    fmt = indent + "  ".join(
        f"{{:>{w}}}" if h in right else ("{}" if i == last else f"{{:<{w}}}")
        for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    line = fmt.format

    write(line(*header).rstrip() + "\n")
    rows_done = [line(*row).rstrip() for row in head]
    while True:
        if rows_done:
            write("\n".join(rows_done) + "\n")
        rows_done = [line(*row).rstrip() for row in islice(it, chunk)]
        if not rows_done:
            break
