"""``xenevt dump``: the FIFO queues and event words of a domain, from wherever its pages are.

The options say which memory to read: the backend's own view (the simulator's
memory), frames mapped through privcmd (``--gfn``/``--control``), this
kernel's memory (``--self``), or a raw file saved earlier (``--from``);
``memory.open_sources`` picks the source, and one decoder (the engine's
walker) reads the image every source gives.
"""

from __future__ import annotations

import click

from .. import memory
from ..dump import build_dump
from ..dump.rawfile import save_raw
from ..dump.render import render_dump
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
    given = [bool(from_file), self_kernel, bool(gfns)]
    if sum(given) > 1:
        raise click.UsageError("pick one source: --from FILE, --self or --gfn")
    if (controls or control_gfn is not None) and not gfns:
        raise click.UsageError("--control/--control-gfn describe a mapping: give the event array with --gfn")
    if all_domains and any(given):
        raise click.UsageError("--all-domains dumps the backend's domains: it takes no --from, --self or --gfn")
    if from_file and raw_file and raw_file != "-":
        raise click.UsageError("--from decodes a saved file: it takes no --raw")
    cbs = list(controls) + ([(control_gfn, offset)] if control_gfn is not None else [])
    ask = memory.Ask(domain=c.domain(local_domain), all_domains=all_domains, from_file=from_file,
                     self_kernel=self_kernel, gfns=tuple(gfns), controls=tuple(cbs), kcore=kcore, kallsyms=kallsyms,
                     cpus_file=cpus_file)
    chosen = memory.open_sources(ask, lambda: c.backend(read_only=True))
    if raw_file and len(chosen) != 1:
        raise click.UsageError("--raw saves one domain: pick it with --domain")
    dumps = []
    for src in chosen:
        img = src.fifo_image()
        if raw_file:
            break
        dumps.append(build_dump(img.mem, img.domain, img.source, channels=src.channels(), guest_known=img.guest_known,
                                all_words=all_words, max_ports=img.max_ports))
    if raw_file == "-":
        from ..dump.rawfile import encode

        data = encode(img.mem, img.domain, img.saved_source, guest=img.guest_known, channels=img.channel_table)
        out = click.get_binary_stream("stdout")
        out.write(data)
        out.flush()
        return
    if raw_file:
        mem = img.mem
        size = save_raw(raw_file, mem, img.domain, img.saved_source, guest=img.guest_known,
                        channels=img.channel_table)
        c.emit({"domain": img.domain, "file": raw_file, "bytes": size, "event_array_pages": mem.nr_pages},
               f"saved the FIFO pages of domain {img.domain} ({mem.nr_pages} event-array page(s), {mem.nr_vcpus} "
               f"vCPU(s)) to {raw_file}: {size} bytes")
        return
    if c.json:
        c.emit(dumps[0].as_dict() if len(dumps) == 1 and not all_domains else [x.as_dict() for x in dumps])
        return
    for i, x in enumerate(dumps):
        if i:
            c.out.print()
        render_dump(x, c.out)


def register(cli: click.Group) -> None:
    cli.add_command(dump)
