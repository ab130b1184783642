"""The text view of a dump: FIFO queues as chains, then the event words that matter; 2-level vcpu_info and
the upcall order per vCPU, then the ports whose bits matter."""

from __future__ import annotations

from collections.abc import Callable

from .model import DomainDump, TwoLevelDump, _bits
from .text import TextOut, color_wanted, stream_table

__all__ = ["TextOut", "color_wanted", "render_dump", "stream_table", "text_out"]

def text_out(out) -> TextOut:
    """A TextOut for ``out``: itself, or a rich Console's file (the demo's, the fuzz targets')."""
    if isinstance(out, TextOut):
        return out
    if hasattr(out, "color_system"):  # a rich Console
        return TextOut(out.file, color=out.color_system is not None and out.is_terminal)
    return TextOut(out, color_wanted(out))


def _name_cell(d: DomainDump | TwoLevelDump) -> Callable[[int], str] | None:
    """The name column's cell for a port (``vif 0 queue 0 tx ↔ d0:87``), or None: nothing names any port."""
    names = d.names
    if names is None or not names.names:
        return None
    return lambda port: names.cell(d.domain, port)


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
        said = f" ({v.state})" if v.state not in (None, "online") else ""
        if not v.control_block:
            console.line(f"  vCPU {v.vcpu}{said}: no control block (events for it are dropped)")
            continue
        ready = ",".join(map(str, _bits(v.ready))) or "-"
        line = f"  vCPU {v.vcpu}{said}: READY {v.ready:#06x} [{ready}]"
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
        named = _name_cell(d)
        stream_table(console.write, ("port", "word", "PMLB", "link", "state", "vcpu", "prio", "remote")
                     + (("name",) if named else ()),
                     ((str(w.port), f"{w.word:#010x}", w.flags, str(w.link) if w.link else "-",
                       w.channel.state if w.channel else "", str(w.channel.vcpu) if w.channel else "",
                       str(w.channel.priority) if w.channel and w.channel.priority is not None else "",
                       w.channel.remote(short=True) if w.channel else "") + ((named(w.port),) if named else ())
                      for w in d.words),
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
        named = _name_cell(d)
        stream_table(console.write, ("port", "PMS", "vcpu", "state", "remote") + (("name",) if named else ()),
                     ((str(p.port), p.flags, "-" if p.vcpu is None else str(p.vcpu),
                       p.channel.state if p.channel else "", p.channel.remote(short=True) if p.channel else "")
                      + ((named(p.port),) if named else ()) for p in d.ports), right=("port", "vcpu"), indent="  ")
    if d.plain_masked:
        console.line(f"  {d.plain_masked} more port(s) are masked and idle, the boot default (--all-words lists "
                 "them)", style="dim")
