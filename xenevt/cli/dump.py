"""``xenevt dump``: the FIFO queues and event words of a domain, from wherever its pages are.

Sources: the backend's own view (the simulator's memory), frames mapped through
privcmd (``--gfn``/``--control``), this kernel's memory (``--self``), or a raw
file saved earlier (``--from``).  All become a DomainMemory and one decoder
(the engine's walker) reads it.
"""

from __future__ import annotations

import click

from ..dump import build_dump, load_raw
from ..dump.frames import from_frames
from ..dump.rawfile import save_raw
from ..dump.render import render_dump
from ..engine import DomainMemory
from .context import CB_OFFSET, GFN, Ctx, Pair, domain_option, json_option, pass_ctx


@click.command("dump")
@click.option("--from", "from_file", metavar="FILE", type=click.Path(dir_okay=True),
              help="Decode a raw dump saved with --raw (no backend needed).")
@click.option("--self", "self_kernel", is_flag=True,
              help="This kernel's own FIFO queues (dom0 or domU), read from /proc/kcore; needs root.")
@click.option("--gfn", "gfns", type=GFN, multiple=True,
              help="A frame of the domain's event array, in order (repeat per page); mapped through privcmd.")
@click.option("--control", "controls", type=Pair(GFN, CB_OFFSET, "GFN:OFFSET"), multiple=True,
              help="A vCPU's control block as GFN:OFFSET, in vCPU order (repeatable).")
@click.option("--control-gfn", type=GFN, default=None, help="Control block frame of one vCPU (with --offset).")
@click.option("--offset", type=CB_OFFSET, default=0, help="Control block offset in its frame.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "raw"]), default=None,
              help="text (default), json (as --json), or raw: the ABI pages in xenevt's dump file format "
                   "(to --output FILE, or to stdout when it is not a terminal).")
@click.option("--output", "-o", metavar="FILE", type=click.Path(), help="With --format raw: the file to write.")
@click.option("--raw", "raw_file", metavar="FILE", type=click.Path(), help="Same as --format raw --output FILE.")
@click.option("--all-words", is_flag=True, help="List plain MASKED words too (the boot default).")
@click.option("--all-domains", is_flag=True, help="Every domain of the host.")
@click.option("--kcore", default="/proc/kcore", hidden=True)
@click.option("--kallsyms", default="/proc/kallsyms", hidden=True)
@click.option("--cpus-file", default="/sys/devices/system/cpu/possible", hidden=True)
@domain_option
@json_option
@pass_ctx
def dump(c: Ctx, from_file, self_kernel, gfns, controls, control_gfn, offset, fmt, output, raw_file, all_words,
         all_domains, kcore, kallsyms, cpus_file, local_domain):
    """Queues per vCPU and priority as LINK chains (walked without changing a bit), READY bits,
    and every event word that is not the boot default, with its PENDING/MASKED/LINKED/BUSY flags.

    A broken chain (a LINK past the array, to an unlinked word, a cycle) is shown with the port
    where it breaks."""
    if fmt == "json":
        c.json = True
    if fmt == "raw" or raw_file:
        raw_file = raw_file or output or "-"
        if raw_file == "-" and c.out.is_terminal:
            raise click.UsageError("--format raw writes binary: give --output FILE or redirect stdout")
    elif output:
        raise click.UsageError("--output goes with --format raw")
    sources = [bool(from_file), self_kernel, bool(gfns)]
    if sum(sources) > 1:
        raise click.UsageError("pick one source: --from FILE, --self or --gfn")
    if (controls or control_gfn is not None) and not gfns:
        raise click.UsageError("--control/--control-gfn describe a mapping: give the event array with --gfn")
    if all_domains and any(sources):
        raise click.UsageError("--all-domains dumps the backend's domains: it takes no --from, --self or --gfn")
    if from_file and raw_file and raw_file != "-":
        raise click.UsageError("--from decodes a saved file: it takes no --raw")
    dumps = []
    if from_file:
        raw = load_raw(from_file)
        mem, domain, source, guest, chans = (raw.mem, raw.domain, f"file {from_file} ({raw.source})",
                                             raw.guest_known, raw.channels())
        max_ports = raw.mem.nr_chans if raw.has_channels else None
    elif self_kernel:
        from ..backend.xen import self_domid
        from ..backend.xen.kernel import read_self

        mem, source = read_self(kcore, kallsyms, cpus_file)
        domain, guest, chans, max_ports = self_domid() or 0, True, None, None
    elif gfns:
        cbs = list(controls) + ([(control_gfn, offset)] if control_gfn is not None else [])
        b = c.backend(read_only=True)
        domain = c.domain(local_domain)
        frames = b.map_frames(domain, list(gfns) + [g for g, _ in cbs])
        pages, cb_frames = frames[: len(gfns)], frames[len(gfns):]
        mem = from_frames(pages, [f[o:o + 72] for f, (_, o) in zip(cb_frames, cbs, strict=True)] or [None])
        source = f"{b.name}: {len(gfns)} frame(s) mapped through privcmd"
        guest, chans, max_ports = False, b.channels(domain), None
    else:
        b = c.backend(read_only=True)
        domains = b.domains() if all_domains else [c.domain(local_domain)]
        if raw_file and len(domains) != 1:
            raise click.UsageError("--raw saves one domain: pick it with --domain")
        for d in domains:
            mem = _snapshot(b, d)
            if raw_file:
                break
            dumps.append(build_dump(mem, d, b.name, channels=b.channels(d), all_words=all_words,
                                    max_ports=mem.nr_chans))
        domain, source, guest, chans, max_ports = domains[0], f"{b.name} domain {domains[0]}", True, None, None
    if raw_file == "-":
        from ..dump.rawfile import encode

        data = encode(mem, domain, source, guest=guest, channels=not (self_kernel or gfns))
        out = click.get_binary_stream("stdout")
        out.write(data)
        out.flush()
        return
    if raw_file:
        size = save_raw(raw_file, mem, domain, source, guest=guest, channels=not (self_kernel or gfns))
        c.emit({"domain": domain, "file": raw_file, "bytes": size, "event_array_pages": mem.nr_pages},
               f"saved the FIFO pages of domain {domain} ({mem.nr_pages} event-array page(s), {mem.nr_vcpus} vCPU(s))"
               f" to {raw_file}: {size} bytes")
        return
    if not dumps:
        dumps = [build_dump(mem, domain, source, channels=chans, guest_known=guest, all_words=all_words,
                            max_ports=max_ports)]
    if c.json:
        c.emit(dumps[0].as_dict() if len(dumps) == 1 and not all_domains else [x.as_dict() for x in dumps])
        return
    for i, x in enumerate(dumps):
        if i:
            c.out.print()
        render_dump(x, c.out)


def _snapshot(backend, domain: int) -> DomainMemory:
    """A private copy, so the decoded view is of one moment and decoding cannot disturb the host."""
    live = backend.fifo_memory(domain)
    return DomainMemory(bytearray(live.snapshot()))


def register(cli: click.Group) -> None:
    cli.add_command(dump)
