"""``xenevt watch``: event activity per port (simulator) or per Xen IRQ (this guest), live."""

from __future__ import annotations

import time

import click
from rich.live import Live
from rich.table import Table

from ..activity import STORM_RATE
from ..errors import XenevtError
from .context import COUNT, RATE, WATCH_INTERVAL, Ctx, domain_option, json_option, pass_ctx


def _note(r, storm_rate: float) -> str:
    notes = []
    if r.storm:
        notes.append(f"STORM: over {storm_rate:,.0f}/s")
    if r.stalled:
        notes.append("STALLED: pending, count not moving")
    if r.spurious:
        notes.append(f"{r.spurious} spurious")
    if r.eoi_delayed:
        notes.append(f"EOI delayed {r.eoi_delayed} jiffies")
    return "; ".join(notes)


def _port_of(row, names, domain: int) -> int | None:
    """The port a row counts: the simulator's rows say it; a /proc/interrupts row only where names tied it."""
    return row.port if row.port is not None else names.irq_port(domain, row.key) if names is not None else None


def _table(title: str, rates, storm_rate: float, names=None, domain: int = 0) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold", box=None)
    for col in ("what", "name", "port name", "total", "per s", "raised", "PM", "note"):
        t.add_column(col, justify="right" if col in ("total", "per s", "raised") else "left")
    for r in sorted(rates, key=lambda r: (-r.per_second, r.row.key)):
        row = r.row
        flags = ("P" if row.pending else "-") + ("M" if row.masked else "-") if row.pending is not None else ""
        port = _port_of(row, names, domain)
        t.add_row(row.key, row.name, names.text(domain, port) if names is not None and port is not None else "",
                  str(row.total), f"{r.per_second:.1f}",
                  "" if row.raised is None else str(row.raised), flags, _note(r, storm_rate),
                  style="bold red" if r.stalled or r.storm else "yellow" if r.spurious or r.eoi_delayed else None)
    return t


@click.command("watch")
@click.option("--interval", "-i", type=WATCH_INTERVAL, default=1.0, show_default=True,
              help="Seconds between samples.")
@click.option("--once", is_flag=True, help="Take two samples one interval apart, print once, exit.")
@click.option("--count", "-n", type=COUNT, default=None, help="Stop after N refreshes.")
@click.option("--storm-rate", type=RATE, default=STORM_RATE, show_default=True, metavar="N",
              help="Events per second on one row flagged as a storm.")
@domain_option
@json_option
@pass_ctx
def watch(c: Ctx, interval, once, count, storm_rate, local_domain):
    """Watch event activity: rates, storms, stuck ports.

    Event activity: per port on the simulator (deliveries, raises, flags), per Xen interrupt on a
    real guest (/proc/interrupts: xen-dyn, xen-dyn-lateeoi, xen-percpu, xen-pirq rows) and per xenbus
    device (events, spurious events, EOI delay); totals, rates, rows raising faster than --storm-rate
    (a storm), and ports whose count stopped moving while their PENDING bit is set.

    \b
    Examples:
      xenevt watch --once                  # two samples a second apart, printed once
      xenevt watch -i 0.5 -n 2             # two refreshes, half a second apart
    """
    from ..activity import Sample
    from ..activity import rates as measure

    def rates(a, b):
        return measure(a, b, storm_rate)

    d = c.domain(local_domain)
    b = c.backend(read_only=True)

    def sample() -> Sample:
        return Sample(f"{b.name} domain {d}", b.activity(d))

    from ..evidence.names import for_backend

    try:
        names = for_backend(b, [(d, st) for st in b.list_ports(d)])
    except XenevtError:  # a guest may not list its own ports (EPERM): its frontends' are in its xenstore
        names = for_backend(b, [], frontends_of=d)

    def name_field(row):
        port = _port_of(row, names, d)
        return names.field(d, port) if names is not None and port is not None else None

    before = sample()
    if once or c.json:
        time.sleep(interval)
        after = sample()
        result = rates(before, after)
        if c.json:
            c.emit({"domain": d, "interval": round(after.taken_at - before.taken_at, 3), "rows": [
                {"key": r.row.key, "name": r.row.name, "port": r.row.port, "counts": r.row.counts, "total": r.row.total,
                 "per_second": round(r.per_second, 2), "raised": r.row.raised, "pending": r.row.pending,
                 "masked": r.row.masked, "stalled": r.stalled, "storm": r.storm, "spurious": r.row.spurious,
                 "spurious_since": r.spurious, "jiffies_eoi_delayed": r.row.eoi_delayed,
                 "eoi_delayed_since": r.eoi_delayed, "port_name": name_field(r.row)} for r in result],
                "storm_rate": storm_rate})
        else:
            c.out.print(_table(f"{after.source}: activity over {interval:g} s", result, storm_rate, names, d))
        return
    shown = 0
    try:
        with Live(console=c.out, auto_refresh=False) as live:
            while count is None or shown < count:
                time.sleep(interval)
                after = sample()
                live.update(_table(f"{after.source}: activity (every {interval:g} s, Ctrl-C to stop)",
                                   rates(before, after), storm_rate, names, d), refresh=True)
                before = after
                shown += 1
    except KeyboardInterrupt:
        pass


def register(cli: click.Group) -> None:
    cli.add_command(watch)
