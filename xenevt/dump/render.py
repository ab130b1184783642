"""The text view of a dump: FIFO queues as chains, then the event words that matter; 2-level vcpu_info and
the upcall order per vCPU, then the ports whose bits matter."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.console import Console
from rich.text import Text

from .model import DomainDump, TwoLevelDump, _bits


def stream_table(write: Callable[[str], object], header: tuple[str, ...], rows: Iterable[tuple[str, ...]],
                 right: tuple[str, ...] = (), indent: str = "", sample: int = 256) -> None:
    """Write rows as they come, not one table built in memory (a host's 40,000 ports): column widths from the
    header and the first ``sample`` rows (a longer cell later just pushes its line wider), two spaces between
    columns, the last column unpadded.  Plain text: cells carry no markup."""
    it = iter(rows)
    head: list[tuple[str, ...]] = []
    for row in it:
        head.append(row)
        if len(head) >= sample:
            break
    widths = [max([len(h)] + [len(r[i]) for r in head]) for i, h in enumerate(header)]
    last = len(header) - 1

    def line(cells) -> str:
        out = [cell.rjust(widths[i]) if header[i] in right else (cell if i == last else cell.ljust(widths[i]))
               for i, cell in enumerate(cells)]
        return indent + "  ".join(out).rstrip() + "\n"

    write(line(header))
    for row in head:
        write(line(row))
    for row in it:
        write(line(row))


def _name_cell(d: DomainDump | TwoLevelDump) -> Callable[[int], str] | None:
    """The name column's cell for a port (``vif 0 queue 0 tx ↔ d0:87``), or None: nothing names any port."""
    names = d.names
    if names is None or not names.names:
        return None
    return lambda port: names.cell(d.domain, port)


def render_dump(d: DomainDump | TwoLevelDump, console: Console) -> None:
    if isinstance(d, TwoLevelDump):
        _render_l2(d, console)
        return
    limit = f" (limit: port {d.max_ports - 1})" if d.max_ports else ""
    console.print(Text(f"domain {d.domain}: {d.abi} ABI, {d.nr_pages} event-array page(s) = ports 0..{d.nr_ports - 1}"
                       f"{limit}; source: {d.source}", style="bold"))
    for w in d.warnings:
        console.print(Text(f"  warning: {w}", style="yellow"))
    for v in d.vcpus:
        if not v.control_block:
            console.print(f"  vCPU {v.vcpu}: no control block (events for it are dropped)")
            continue
        ready = ",".join(map(str, _bits(v.ready))) or "-"
        line = f"  vCPU {v.vcpu}: READY {v.ready:#06x} [{ready}]"
        if v.guest_ready:
            line += f"  guest still holds [{','.join(map(str, _bits(v.guest_ready)))}]"
        console.print(line)
        if not v.queues:
            console.print("    all queues empty")
        for q in v.queues:
            chain = " -> ".join(map(str, q.chain)) or "(none)"
            flag = " READY" if q.ready else ""
            line = f"    q{q.priority:<2d}{flag:6s} head {q.head} ({q.head_from}): {chain}  [{q.status}]"
            if q.note:
                console.print(Text(line).append(f"  {q.note}", style="red" if q.broken else "dim"))
            else:  # (a chain may hold thousands of ports: written as it is, not measured cell by cell)
                console.file.write(line + "\n")
    if not d.words:
        console.print("  no event word set beyond the boot default (MASKED)")
    else:
        console.print(Text("  event words (P=pending M=masked L=linked B=busy):"))
        named = _name_cell(d)
        stream_table(console.file.write, ("port", "word", "PMLB", "link", "state", "vcpu", "prio", "remote")
                     + (("name",) if named else ()),
                     ((str(w.port), f"{w.word:#010x}", w.flags, str(w.link) if w.link else "-",
                       w.channel.state if w.channel else "", str(w.channel.vcpu) if w.channel else "",
                       str(w.channel.priority) if w.channel and w.channel.priority is not None else "",
                       w.channel.remote(short=True) if w.channel else "") + ((named(w.port),) if named else ())
                      for w in d.words),
                     right=("port", "link", "vcpu", "prio"), indent="  ")
    if d.plain_masked:
        console.print(f"  {d.plain_masked} more word(s) are plain MASKED, the boot default (--all-words lists them)",
                      style="dim")


def _render_l2(d: TwoLevelDump, console: Console) -> None:
    limit = f" (limit: port {d.max_ports - 1})" if d.max_ports else ""
    console.print(Text(f"domain {d.domain}: 2-level ABI (shared_info's bitmaps), ports 0..{d.nr_ports - 1}{limit}; "
                       f"source: {d.source}", style="bold"))
    for w in d.warnings:
        console.print(Text(f"  warning: {w}", style="yellow"))
    for v in d.vcpus:
        if not v.known:
            console.print(f"  vCPU {v.vcpu}: vcpu_info not read (this source does not know where the guest "
                          "registered it)")
            continue
        words = ",".join(map(str, v.selector_words)) or "-"
        console.print(f"  vCPU {v.vcpu}: evtchn_upcall_pending {v.upcall_pending}, evtchn_upcall_mask "
                      f"{v.upcall_mask}, evtchn_pending_sel {v.pending_sel:#018x} [words {words}]")
        if v.next_upcall is None:
            console.print("    next upcall: not predicted (Linux's scan position is out of range)", style="red")
            continue
        order = ", ".join(map(str, v.next_upcall)) or "nothing"
        where = (f"resuming at word {v.scan[0]} bit {v.scan[1]}" if v.scan is not None
                 else "from port 0: Linux's scan position is not in this source")
        console.print(f"    next upcall delivers: {order} ({where})")
    if not d.ports:
        console.print("  no port pending, and none open beyond the boot default (masked)")
    else:
        console.print(Text("  ports (P=pending M=masked S=its vCPU's selector bit for its word, ?=not known):"))
        named = _name_cell(d)
        stream_table(console.file.write, ("port", "PMS", "vcpu", "state", "remote") + (("name",) if named else ()),
                     ((str(p.port), p.flags, "-" if p.vcpu is None else str(p.vcpu),
                       p.channel.state if p.channel else "", p.channel.remote(short=True) if p.channel else "")
                      + ((named(p.port),) if named else ()) for p in d.ports), right=("port", "vcpu"), indent="  ")
    if d.plain_masked:
        console.print(f"  {d.plain_masked} more port(s) are masked and idle, the boot default (--all-words lists "
                      "them)", style="dim")
