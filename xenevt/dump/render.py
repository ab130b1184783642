"""The text view of a dump: FIFO queues as chains, then the event words that matter; 2-level vcpu_info and
the upcall order per vCPU, then the ports whose bits matter."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from itertools import islice

from .model import DomainDump, TwoLevelDump, _bits

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


def text_out(out) -> TextOut:
    """A TextOut for ``out``: itself, or a rich Console's file (the demo's, the fuzz targets')."""
    if isinstance(out, TextOut):
        return out
    if hasattr(out, "color_system"):  # a rich Console
        return TextOut(out.file, color=out.color_system is not None and out.is_terminal)
    return TextOut(out, color_wanted(out))


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


def render_dump(d: DomainDump | TwoLevelDump, out) -> None:
    """The text view of ``d`` to ``out`` (a TextOut, a rich Console or a text file)."""
    console = text_out(out)
    if isinstance(d, TwoLevelDump):
        _render_l2(d, console)
        return
    limit = f" (limit: port {d.max_ports - 1})" if d.max_ports else ""
    console.line(f"domain {d.domain}: {d.abi} ABI, {d.nr_pages} event-array page(s) = ports 0..{d.nr_ports - 1}"
                 f"{limit}; source: {d.source}", "bold")
    for w in d.warnings:
        console.line(f"  warning: {w}", "yellow")
    for v in d.vcpus:
        if not v.control_block:
            console.line(f"  vCPU {v.vcpu}: no control block (events for it are dropped)")
            continue
        ready = ",".join(map(str, _bits(v.ready))) or "-"
        line = f"  vCPU {v.vcpu}: READY {v.ready:#06x} [{ready}]"
        if v.guest_ready:
            line += f"  guest still holds [{','.join(map(str, _bits(v.guest_ready)))}]"
        console.line(line)
        if not v.queues:
            console.line("    all queues empty")
        for q in v.queues:
            chain = " -> ".join(map(str, q.chain)) or "(none)"
            flag = " READY" if q.ready else ""
            line = f"    q{q.priority:<2d}{flag:6s} head {q.head} ({q.head_from}): {chain}  [{q.status}]"
            if q.note:
                console.line(line, None, f"  {q.note}", "red" if q.broken else "dim")
            else:  # (a chain may hold thousands of ports: written as it is, not measured cell by cell)
                console.write(line + "\n")
    if not d.words:
        console.line("  no event word set beyond the boot default (MASKED)")
    else:
        console.line("  event words (P=pending M=masked L=linked B=busy):")
        stream_table(console.write, ("port", "word", "PMLB", "link", "state", "vcpu", "prio", "remote"),
                     ((str(w.port), f"{w.word:#010x}", w.flags, str(w.link) if w.link else "-",
                       w.channel.state if w.channel else "", str(w.channel.vcpu) if w.channel else "",
                       str(w.channel.priority) if w.channel and w.channel.priority is not None else "",
                       w.channel.remote(short=True) if w.channel else "") for w in d.words),
                     right=("port", "link", "vcpu", "prio"), indent="  ")
    if d.plain_masked:
        console.line(f"  {d.plain_masked} more word(s) are plain MASKED, the boot default (--all-words lists them)",
                 style="dim")


def _render_l2(d: TwoLevelDump, console: TextOut) -> None:
    limit = f" (limit: port {d.max_ports - 1})" if d.max_ports else ""
    console.line(f"domain {d.domain}: 2-level ABI (shared_info's bitmaps), ports 0..{d.nr_ports - 1}{limit}; "
                 f"source: {d.source}", "bold")
    for w in d.warnings:
        console.line(f"  warning: {w}", "yellow")
    for v in d.vcpus:
        if not v.known:
            console.line(f"  vCPU {v.vcpu}: vcpu_info not read (this source does not know where the guest "
                          "registered it)")
            continue
        words = ",".join(map(str, v.selector_words)) or "-"
        console.line(f"  vCPU {v.vcpu}: evtchn_upcall_pending {v.upcall_pending}, evtchn_upcall_mask "
                      f"{v.upcall_mask}, evtchn_pending_sel {v.pending_sel:#018x} [words {words}]")
        if v.next_upcall is None:
            console.line("    next upcall: not predicted (Linux's scan position is out of range)", style="red")
            continue
        order = ", ".join(map(str, v.next_upcall)) or "nothing"
        where = (f"resuming at word {v.scan[0]} bit {v.scan[1]}" if v.scan is not None
                 else "from port 0: Linux's scan position is not in this source")
        console.line(f"    next upcall delivers: {order} ({where})")
    if not d.ports:
        console.line("  no port pending, and none open beyond the boot default (masked)")
    else:
        console.line("  ports (P=pending M=masked S=its vCPU's selector bit for its word, ?=not known):")
        stream_table(console.write, ("port", "PMS", "vcpu", "state", "remote"),
                     ((str(p.port), p.flags, "-" if p.vcpu is None else str(p.vcpu),
                       p.channel.state if p.channel else "", p.channel.remote(short=True) if p.channel else "")
                      for p in d.ports), right=("port", "vcpu"), indent="  ")
    if d.plain_masked:
        console.line(f"  {d.plain_masked} more port(s) are masked and idle, the boot default (--all-words lists "
                 "them)", style="dim")
