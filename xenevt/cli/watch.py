"""``xenevt watch``: event activity per port (simulator) or per Xen IRQ (this guest), live.

Three outputs, one loop: a live table on a terminal (urgent rows pinned at the top, cut to the screen), one
plain line per row per sample when piped (as ``xentop -b``), one JSON object per sample with --json (NDJSON).
"""

from __future__ import annotations

import time

import click

from ..activity import SORTS, STORM_RATE
from .context import COUNT, RATE, WATCH_INTERVAL, Ctx, domains_option, json_option, pass_ctx

NOTES = {"storm": "STORM", "stalled": "STALLED: pending, not delivered", "spurious": "spurious",
         "eoi-delayed": "EOI delayed"}


def _note(r) -> str:
    words = []
    for flag in r.flags:
        text = NOTES[flag]
        if flag == "spurious":
            text = f"{r.spurious} spurious"
        elif flag == "eoi-delayed":
            text = f"EOI delayed {r.eoi_delayed} jiffies"
        words.append(text)
    return "; ".join(words)


class _View:
    """What each row is called, whose it is and how the rows are ordered: the port's name where something names
    it (a vif queue, the console), else what the row is (its state and peer, or the IRQ's handler)."""

    def __init__(self, names, domains: list[int], sort: str):
        self.names, self.domains, self.sort = names, domains, sort

    def sample(self, host):
        """One sample of every domain's rows, each remembered as its domain's."""
        from ..activity import Sample

        rows = []
        for d in self.domains:
            for r in host.activity(d).rows:
                if len(self.domains) > 1:
                    r.key = f"d{d} {r.key}"  # (rates pair rows by key: one per domain; domain() reads it back)
                rows.append(r)
        return Sample(f"{host.kind} domain {', '.join(map(str, self.domains))}", rows)

    def domain(self, row) -> int:
        """The row's domain: the only one read, else the ``dN`` its key starts with."""
        return self.domains[0] if len(self.domains) == 1 else int(row.key.split(" ", 1)[0][1:])

    def port(self, row) -> int | None:
        """The port a row counts: the simulator's rows say it; a /proc/interrupts row only where names tied it."""
        if row.port is not None:
            return row.port
        key = row.key.split(" ", 1)[1] if len(self.domains) > 1 else row.key
        return self.names.irq_port(self.domain(row), key)

    def name(self, rate) -> str:
        port = self.port(rate.row)
        named = self.names.text(self.domain(rate.row), port) if port is not None else ""
        return named or rate.row.name

    def ordered(self, result):
        from ..activity import order

        return order(result, self.sort, self.name, lambda r: self.domain(r.row))

    def label(self, row) -> str:
        """The row in the one way xenevt writes a port (``d0:5``); an IRQ or device as its key."""
        port = row.port
        return f"d{self.domain(row)}:{port}" if port is not None else row.key

    def json_row(self, r) -> dict:
        """The schema's ``sample_row``: what the row counts, its rates, the port's flags where read (pending,
        masked), and its ``alarms`` (storm, stalled, spurious, eoi-delayed)."""
        row = r.row
        d = self.domain(row)
        port = self.port(row)
        out = {"domain": d, "key": row.key, "port": port, "what": row.name,
               "name": self.names.field(d, port) if port is not None else None,
               "counts": row.counts, "total": row.total, "delivered": r.delta,
               "delivered_per_second": round(r.per_second, 2), "raised_total": row.raised, "raised": r.raised,
               "raised_per_second": round(r.raised_per_second, 2)}
        if row.pending is not None:
            out["flags"] = {"pending": row.pending, "masked": row.masked}
        return out | {"alarms": r.flags, "spurious_total": row.spurious, "spurious": r.spurious,
                      "jiffies_eoi_delayed_total": row.eoi_delayed, "jiffies_eoi_delayed": r.eoi_delayed}


def _names(host, domains: list[int]):
    """The ports' names; a guest that may not list its own ports is named from its frontends' nodes."""
    from ..errors import XenevtError

    try:
        return host.names(domains[0], [st for d in domains for st in host.ports(d)])
    except XenevtError:
        return host.names(domains[0])


def _pm(row) -> str:
    return ("P" if row.pending else "-") + ("M" if row.masked else "-") if row.pending is not None else ""


def _rate(value: float, counted: bool = True) -> str:
    return f"{value:,.1f}" if counted else ""


def _table(title: str, result, view: _View, height: int | None = None):
    """The live view: urgent rows first, then in ``view.sort`` order; with ``height`` (the screen's), cut to fit
    with a last line saying how many rows are not shown."""
    from rich.table import Table

    rows = view.ordered(result)
    hidden = 0
    if height is not None:
        room = max(height - 4, 1)  # the title, the header, the line saying what is cut, the cursor's line
        if len(rows) > room:
            hidden, rows = len(rows) - room + 1, rows[:room - 1]
    caption = f"… {hidden} more row(s) (urgent first, then by {view.sort})" if hidden else None
    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left", header_style="bold",
              box=None, pad_edge=False)
    cells = [(view.label(r.row), view.name(r), str(r.row.total), _rate(r.raised_per_second, r.row.raised is not None),
              _rate(r.per_second), _pm(r.row), _note(r)) for r in rows]
    for i, col in enumerate(("port", "name", "total", "raised/s", "deliv/s", "PM", "note")):
        squeezable = col in ("name", "note")  # (the rest are never cut: a port or a rate shown in part is wrong)
        widest = max([len(col)] + [len(row[i]) for row in cells])
        t.add_column(col, justify="right" if col in ("total", "raised/s", "deliv/s") else "left", no_wrap=True,
                     min_width=len(col) if squeezable else widest, overflow="ellipsis",
                     ratio=1 if squeezable else None)
    for r, row_cells in zip(rows, cells, strict=True):
        t.add_row(*row_cells, style="bold red" if r.urgent else "yellow" if r.spurious or r.eoi_delayed else None)
    return t


def _plain(out, stamp: str, result, view: _View) -> None:
    """One line per row (piped text, as ``xentop -b``): time, port, total, raises/s, deliveries/s, PM, alarms
    (comma-separated, or -), then the name (the only field with spaces, so it comes last)."""
    lines = [f"{stamp} {view.label(r.row)} {r.row.total} "
             f"{r.raised_per_second:.1f} {r.per_second:.1f} {_pm(r.row) or '--'} {','.join(r.flags) or '-'} "
             f"{view.name(r)}" for r in view.ordered(result)]
    out.write("\n".join(lines) + ("\n" if lines else ""))
    out.flush()


@click.command("watch")
@click.option("--interval", "-i", type=WATCH_INTERVAL, default=1.0, show_default=True,
              help="Seconds between samples.")
@click.option("--once", is_flag=True, help="One sample: two readings one interval apart, printed once.")
@click.option("--count", "-n", type=COUNT, default=None, help="Stop after N samples (default: until Ctrl-C).")
@click.option("--sort", "sort", type=click.Choice(SORTS), default="port", show_default=True,
              help="Row order after the urgent rows (storms, events nothing handles), which come first.")
@click.option("--storm-rate", type=RATE, default=STORM_RATE, show_default=True, metavar="N",
              help="Events per second on one row flagged as a storm.")
@domains_option
@json_option
@pass_ctx
def watch(c: Ctx, interval, once, count, sort, storm_rate):
    """Watch event activity: rates, storms, stuck ports.

    Event activity: per port on the simulator (deliveries, raises, flags), per Xen interrupt on a
    real guest (/proc/interrupts: xen-dyn, xen-dyn-lateeoi, xen-percpu, xen-pirq rows) and per xenbus
    device (events, spurious events, EOI delay); totals, rates, rows raising faster than --storm-rate
    (a storm), and ports whose count stopped moving while their PENDING bit is set.

    On a terminal, a live table (storms and stalled ports pinned at the top); piped, one line per row per
    sample; with --json, one JSON object per sample, one per line.

    \b
    Examples:
      xenevt watch --sort activity -n 2     # the busiest rows first (storms pinned above), two refreshes
      xenevt watch --json -n 3 -i 0.5       # three samples, one JSON object per line
    """
    from ..activity import rates

    if once:
        count = 1
    ds = c.domains()
    host = c.host
    view = _View(_names(host, ds), ds, sort)
    before = view.sample(host)

    def samples():
        nonlocal before
        taken = 0
        while count is None or taken < count:
            time.sleep(interval)
            after = view.sample(host)
            yield rates(before, after, storm_rate), after.taken_at - before.taken_at, after.source
            before = after
            taken += 1

    if c.json:
        for i, (result, dt, source) in enumerate(samples(), 1):
            c.emit({"domains": ds, "source": source, "sample": i, "interval": round(dt, 3), "storm_rate": storm_rate,
                    "rows": [view.json_row(r) for r in view.ordered(result)]})
        return
    if not c.stdout_is_terminal():
        out = c.stdout
        out.write("time port total raised/s deliv/s PM alarms name\n")
        for result, _, _ in samples():
            _plain(out, time.strftime("%H:%M:%S"), result, view)
        return
    from rich.live import Live

    con = c.out
    with Live(console=con, auto_refresh=False, vertical_overflow="visible") as live:
        for result, dt, source in samples():
            _fit(con)
            title = f"{source}: activity over {dt:.1f} s" + ("" if count == 1 else " (Ctrl-C to stop)")
            live.update(_table(title, result, view, con.size.height), refresh=True)


def _fit(con) -> None:
    """The terminal's size now (it may have been resized; $LINES/$COLUMNS, which rich prefers, may be stale)."""
    import os

    try:
        size = os.get_terminal_size(con.file.fileno())
    except (OSError, ValueError, AttributeError):
        return
    con.size = (size.columns, size.lines)


def register(cli: click.Group) -> None:
    cli.add_command(watch)
