"""``xenevt doctor``: find what is wrong with event channels, and say what it means."""

from __future__ import annotations

import click

from ..activity import STORM_RATE
from .context import (
    DURATION,
    KASLR_OFFSET,
    RATE,
    SAMPLE_INTERVAL,
    Ctx,
    domains_option,
    json_option,
    pass_ctx,
    whole_host,
)

STUCK_AFTER = 10.0  # (evidence.doctor.STUCK_AFTER, kept here so --help imports nothing heavy)

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


@click.command("doctor", epilog="Exit code: 0 healthy (info findings only, and every line of the evidence read), "
               "3 when there is a finding at warning level or above (what went unread is listed beside it), "
               "4 inconclusive (no finding, but part of the evidence could not be read, or it holds no port, or a "
               "finding cannot be told from a transient state on one sample: take a second with --since), "
               "1/2 when the evidence could not be read at all.")
@click.option("--edump", metavar="FILE", help="Read Xen's 'e' debug-key dump (xl dmesg output; - for stdin).")
@click.option("--lsevtchn", "lsevtchn_file", metavar="FILE", help="Read lsevtchn's output for --domain (- for stdin).")
@click.option("--from", "raw_file", metavar="FILE", help="Read a raw dump saved with `xenevt dump --raw`.")
@click.option("--system-map", metavar="FILE", help="The guest kernel's System.map (or vmlinux): read one --domain's "
              "own kernel from dom0 through its page tables (or the kernel in --dump-core).")
@click.option("--dump-core", metavar="FILE", help="Read an `xl dump-core` file of the guest (with --system-map).")
@click.option("--kaslr-offset", type=KASLR_OFFSET, default=None, help="With --system-map: the guest kernel's KASLR "
              "offset, where it cannot be found.")
@click.option("--save", metavar="SNAPSHOT", help="Also save the evidence, for a later --since.")
@click.option("--since", metavar="SNAPSHOT", help="An earlier snapshot: what is still wrong now is stuck, and "
              "counters give rates.")
@click.option("--interval", type=SAMPLE_INTERVAL, metavar="SECONDS",
              help="Take two samples this far apart (instead of --since): rates, storms, stuck ports.")
@click.option("--storm-rate", type=RATE, default=STORM_RATE, show_default=True, metavar="N",
              help="Events per second on one port, IRQ or xenbus device called a storm.")
@click.option("--stuck-after", type=DURATION, default=STUCK_AFTER, show_default=True,
              metavar="SECONDS", help="A port pending in both samples at least this far apart is stuck.")
@click.option("--list-rules", is_flag=True, help="List the rules doctor applies (id, family, severities, what "
              "each finds; --json adds what each needs) and exit.")
@domains_option
@json_option
@pass_ctx
@whole_host
def doctor(c: Ctx, edump, lsevtchn_file, raw_file, system_map, dump_core, kaslr_offset,
           save, since, interval, storm_rate, stuck_after, list_rules):
    """Examine event channels for stuck ports and say why.

    Examine event channels for stuck ports: pending but masked, pending but never queued, LINKED
    but unreachable, broken or cyclic chains, READY/head mismatches, BUSY left set, events on a
    queue their channel left, interdomain ends that disagree, vCPUs without a control block, ports
    connected to or waiting for a domain that is dying or gone, domains stuck dying, and domains
    near their event-channel limit.  With two samples (--since or --interval): event storms (a port,
    IRQ or xenbus device over --storm-rate), spurious events and delayed EOIs growing, and ports
    pending across samples.  On the 2-level ABI: pending and unmasked but its
    selector bit or the vCPU's upcall flag clear, selector bits with nothing under them, and the
    4096-port limit.  Evidence comes from the backend (default), an 'e' dump, lsevtchn output, or
    a raw dump.

    \b
    Examples:
      xenevt doctor                        # every domain of the host
      xenevt doctor -d 1 --json            # dom1, as JSON
      xenevt doctor --save before.json; xenevt doctor --since before.json   # what is still wrong
      xl dmesg | xenevt doctor --edump -   # on Xen: Xen's 'e' debug-key dump
    """
    if list_rules:
        if (c.domains_given or c.all_domains or edump or lsevtchn_file or raw_file or system_map or dump_core or save
                or since or interval):
            raise click.UsageError("--list-rules lists the rules: it reads no evidence")
        _list_rules(c)
        return
    from .. import Source
    from ..errors import UsageError

    # every domain by default (as --all-domains), else -d's, else --as's
    domains = () if c.all_domains and not c.domains_given else tuple(c.domains(default=()))
    try:
        source = Source.from_options(domains=domains, from_file=raw_file, system_map=system_map, dump_core=dump_core,
                                     kaslr_offset=kaslr_offset, edump=edump, lsevtchn=lsevtchn_file)
    except UsageError as e:  # (worded as click's: "xenevt: doctor: …", exit 2)
        raise click.UsageError(str(e)) from None
    diag = c.host.doctor(source, domains=domains, interval=interval, since=since, storm_rate=storm_rate,
                         stuck_after=stuck_after, save=save)
    if c.json:
        c.emit(diag.as_dict())
    else:
        _render(c, diag)
    if diag.exit_code:
        click.get_current_context().exit(diag.exit_code)


def _port_words(names, domain: int, port: int) -> str:
    """``d5:12`` or ``d5:12 (vif 0 queue 0 tx ↔ d0:87)``: a device's name (a VIRQ's or IPI's is the evidence
    line's)."""
    name = names.get(domain, port) if names is not None else None
    if name is None or name.kind in ("virq", "ipi", "pirq"):
        return f"d{domain}:{port}"
    text = name.text(domain)
    peer = names.peers.get((domain, port))
    return f"d{domain}:{port} ({text}" + (f" ↔ d{peer[0]}:{peer[1]})" if peer else ")")


def _render(c: Ctx, diag) -> None:
    rep, names = diag.report, diag.names
    for w in _summary(rep.warnings):
        c.note(f"xenevt: warning: {w}")
    c.page()
    out = c.text
    for f in rep.findings:
        where = ", ".join(_port_words(names, f.domain, p) for p in f.ports) if f.ports else f"d{f.domain}" + (
            f" vCPU {f.vcpu}" if f.vcpu is not None else "")
        out.line(f"{f.severity.upper():8s}", STYLE[f.severity], f"{where}: {f.title}")
        out.line(f"         evidence: {f.evidence}")
        out.line(f"         meaning:  {f.advice}")
        if f.resembles is not None:
            old = f.as_dict()["resembles"]
            out.line(f"         looks like: {old['title']} ({old['where']}; fixed by {old['fix']})")
    if rep.unread:
        out.line(f"{'UNREAD':8s}", "bold magenta", f"{len(rep.unread)} item(s) of the evidence could not be read, so "
                 "this is no clean bill of health:")
        for u in _summary(rep.unread):
            out.line(f"         {u}")
    if rep.to_confirm:
        out.line(f"{'CONFIRM':8s}", "bold magenta", f"{rep.to_confirm} finding(s) may be a guest caught mid-upcall: "
                 "sample again with --since")
    ports = sum(rep.checked.values())
    counts = {s: sum(1 for f in rep.findings if f.severity == s) for s in ("error", "warning", "info")}
    said = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n)
    head = {"healthy": "healthy", "problems": "problems found", "inconclusive": "inconclusive"}[rep.verdict]
    unread = f", {len(rep.unread)} item(s) unread" if rep.unread else ""
    out.line(f"doctor: {head}: {said or 'no findings'} in {len(rep.checked)} domain(s), {ports} port(s) "
             f"checked{unread} ({diag.source})")
    out.flush()


def _summary(items: list[str], first: int = 5) -> list[str]:
    """Many lines of the same kind: the first few and a count, not one per line."""
    if len(items) <= first + 1:
        return items
    return items[:first] + [f"... and {len(items) - first} more (--json lists the first 20)"]


def register(cli: click.Group) -> None:
    cli.add_command(doctor)


def _list_rules(c: Ctx) -> None:
    """Every finding id doctor can report, in the order it runs them (evidence/rules/)."""
    from .. import doctor_rules

    listed = doctor_rules()
    c.emit({"rules": [r.as_dict() for r in listed]},
           "\n".join(f"{r.id:27s} {r.family:9s} {'/'.join(r.severities):14s} {r.doc}" for r in listed))
