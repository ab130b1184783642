"""The text view of a dump: FIFO queues as chains, then the event words that matter; 2-level vcpu_info and
the upcall order per vCPU, then the ports whose bits matter."""

from __future__ import annotations

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .model import DomainDump, TwoLevelDump, _bits


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
            text = Text(f"    q{q.priority:<2d}{flag:6s} head {q.head} ({q.head_from}): {chain}  [{q.status}]")
            if q.note:
                text.append(f"  {q.note}", style="red" if q.broken else "dim")
            console.print(text)
    if not d.words:
        console.print("  no event word set beyond the boot default (MASKED)")
    else:
        t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for col in ("port", "word", "PMLB", "link", "state", "vcpu", "prio", "remote"):
            t.add_column(col, justify="right" if col in ("port", "link", "vcpu", "prio") else "left")
        for w in d.words:
            st = w.channel
            t.add_row(str(w.port), f"{w.word:#010x}", w.flags, str(w.link) if w.link else "-",
                      st.state if st else "", str(st.vcpu) if st else "",
                      str(st.priority) if st and st.priority is not None else "", st.remote(short=True) if st else "")
        console.print(Text("  event words (P=pending M=masked L=linked B=busy):"))
        console.print(Padding(t, (0, 0, 0, 2)))
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
        t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for col in ("port", "PMS", "vcpu", "state", "remote"):
            t.add_column(col, justify="right" if col in ("port", "vcpu") else "left")
        for p in d.ports:
            st = p.channel
            t.add_row(str(p.port), p.flags, "-" if p.vcpu is None else str(p.vcpu), st.state if st else "",
                      st.remote(short=True) if st else "")
        console.print(Text("  ports (P=pending M=masked S=its vCPU's selector bit for its word, ?=not known):"))
        console.print(Padding(t, (0, 0, 0, 2)))
    if d.plain_masked:
        console.print(f"  {d.plain_masked} more port(s) are masked and idle, the boot default (--all-words lists "
                      "them)", style="dim")
