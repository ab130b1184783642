"""``xenevt dump``: a domain's event-channel memory, FIFO queues or 2-level bitmaps, from wherever it is.

The options say which memory to read: the backend's own view (the simulator's
memory), frames mapped through privcmd (``--gfn``/``--control`` for FIFO,
``--shared-info``/``--vcpu-info`` for 2-level), this kernel's memory
(``--self``), another domain's kernel read from dom0 through its page tables
(``--domain D --system-map FILE``), a kernel in an ``xl dump-core`` file
(``--dump-core FILE --system-map FILE``), or a raw file saved earlier
(``--from``); ``memory.open_sources``
picks the source, and one decoder reads the image every source gives, of the
ABI it says (the engine's walker for FIFO, its upcall scan on a copy for
2-level).
"""

from __future__ import annotations

import click

from .. import memory
from ..dump import build_dump
from .context import (
    CB_OFFSET,
    GFN,
    KASLR_OFFSET,
    Ctx,
    Pair,
    _IntRange,
    domain_option,
    json_option,
    pass_ctx,
    whole_host,
)

VCPU_INFO_OFFSET = _IntRange("vcpu_info offset", 0, 4096 - 64, " inside the page (0..4032)", align=64)


class _SharedInfo(click.ParamType):
    """A frame number, or ``auto``: the frame the hypervisor reports for the domain."""

    name = "FRAME|auto"

    def convert(self, value, param, ctx):
        if value == "auto":
            return value
        return GFN.convert(value, param, ctx)


@click.command("dump")
@click.option("--from", "from_file", metavar="FILE", type=click.Path(dir_okay=True),
              help="Decode a raw dump saved with --raw (no backend needed).")
@click.option("--self", "self_kernel", is_flag=True,
              help="This kernel's own event channels (dom0 or domU, FIFO or 2-level), read from /proc/kcore; needs "
                   "root.")
@click.option("--system-map", metavar="FILE", type=click.Path(dir_okay=False),
              help="The guest kernel's System.map (or vmlinux): read --domain's own kernel from dom0 through its page "
                   "tables and privcmd, with no help from the guest (or the kernel in --dump-core).")
@click.option("--dump-core", metavar="FILE", type=click.Path(dir_okay=False),
              help="An `xl dump-core` file of the guest (with --system-map): its kernel's event channels, post mortem.")
@click.option("--kaslr-offset", type=KASLR_OFFSET, default=None,
              help="With --system-map: the guest kernel's KASLR offset, where it cannot be found (0x hex or decimal).")
@click.option("--gfn", "gfns", type=GFN, multiple=True,
              help="A frame of the domain's event array, in order (repeat per page); mapped through privcmd.")
@click.option("--control", "controls", type=Pair(GFN, CB_OFFSET, "GFN:OFFSET"), multiple=True,
              help="A vCPU's control block as GFN:OFFSET, in vCPU order (repeatable).")
@click.option("--control-gfn", type=GFN, default=None, help="Control block frame of one vCPU (with --offset).")
@click.option("--offset", type=CB_OFFSET, default=0, help="Control block offset in its frame.")
@click.option("--shared-info", "shared_info", type=_SharedInfo(), default=None,
              help="2-level: the domain's shared_info frame, mapped through privcmd ('auto': the one Xen reports "
                   "for the domain).")
@click.option("--vcpu-info", "vcpu_infos", type=Pair(GFN, VCPU_INFO_OFFSET, "GFN:OFFSET"), multiple=True,
              help="2-level: a vCPU's vcpu_info as GFN:OFFSET, in vCPU order (repeatable; where the guest "
                   "registered it).")
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
@whole_host
def dump(c: Ctx, from_file, self_kernel, system_map, dump_core, kaslr_offset, gfns, controls, control_gfn, offset,
         shared_info, vcpu_infos, fmt, output, raw_file, all_words, all_domains, kcore, kallsyms, cpus_file,
         local_domain):
    """FIFO: queues per vCPU and priority as LINK chains (walked without changing a bit), READY bits,
    and every event word that is not the boot default, with its PENDING/MASKED/LINKED/BUSY flags.
    A broken chain (a LINK past the array, to an unlinked word, a cycle) is shown with the port
    where it breaks.

    2-level: each vCPU's evtchn_upcall_pending, evtchn_upcall_mask and evtchn_pending_sel, the
    ports Linux's next upcall on it would deliver, in order, and every port pending or open with
    its pending, mask and selector bits."""
    if fmt == "json":
        c.json = True
    if fmt == "raw" or raw_file:
        raw_file = raw_file or output or "-"
        if raw_file == "-" and c.stdout_is_terminal():
            raise click.UsageError("--format raw writes binary: give --output FILE or redirect stdout")
    elif output:
        raise click.UsageError("--output goes with --format raw")
    l2_frames = shared_info is not None or bool(vcpu_infos)
    given = [bool(from_file), self_kernel, bool(gfns), l2_frames, bool(system_map or dump_core)]
    if sum(given) > 1:
        raise click.UsageError("pick one source: --from FILE, --self, --gfn, --shared-info or --system-map")
    if dump_core and not system_map:
        raise click.UsageError("--dump-core needs the guest kernel's symbols: give --system-map FILE")
    if kaslr_offset is not None and not system_map:
        raise click.UsageError("--kaslr-offset goes with --system-map")
    if (controls or control_gfn is not None) and not gfns:
        raise click.UsageError("--control/--control-gfn describe a mapping: give the event array with --gfn")
    if vcpu_infos and shared_info is None:
        raise click.UsageError("--vcpu-info describes a 2-level mapping: give the shared_info frame with "
                               "--shared-info FRAME (or auto)")
    if all_domains and any(given):
        raise click.UsageError("--all-domains dumps the backend's domains: it takes no --from, --self, --gfn, "
                               "--shared-info or --system-map")
    if from_file and raw_file and raw_file != "-":
        raise click.UsageError("--from decodes a saved file: it takes no --raw")
    cbs = list(controls) + ([(control_gfn, offset)] if control_gfn is not None else [])
    ask = memory.Ask(domain=c.domain(local_domain), all_domains=all_domains, from_file=from_file,
                     self_kernel=self_kernel, gfns=tuple(gfns), controls=tuple(cbs), shared_info=shared_info,
                     vcpu_infos=tuple(vcpu_infos), kcore=kcore, kallsyms=kallsyms, cpus_file=cpus_file,
                     dump_core=dump_core, system_map=system_map, kaslr_offset=kaslr_offset)
    chosen = memory.open_sources(ask, c.backend(read_only=True) if ask.needs_backend else None)
    if raw_file and len(chosen) != 1:
        raise click.UsageError("--raw saves one domain: pick it with --domain")
    dumps = []
    for src in chosen:
        img = src.image()
        if raw_file:
            break
        dumps.append(build_dump(img.mem, img.domain, img.source, channels=src.channels(), guest_known=img.guest_known,
                                all_words=all_words, max_ports=img.max_ports, vcpu_known=img.vcpu_known))
    if raw_file == "-":
        from ..dump.rawfile import encode

        data = encode(img.mem, img.domain, img.saved_source, guest=img.guest_known, channels=img.channel_table,
                      vcpu_known=img.vcpu_known)
        out = click.get_binary_stream("stdout")  # type: ignore[operator]  # (click 8.5: deprecated, untyped)
        out.write(data)
        out.flush()
        return
    if raw_file:
        from ..dump.rawfile import save_raw

        mem = img.mem
        size = save_raw(raw_file, mem, img.domain, img.saved_source, guest=img.guest_known,
                        channels=img.channel_table, vcpu_known=img.vcpu_known)
        if img.abi == "2-level":
            c.emit({"domain": img.domain, "file": raw_file, "bytes": size, "abi": img.abi},
                   f"saved the 2-level state of domain {img.domain} (shared_info and {mem.nr_vcpus} vcpu_info(s)) "
                   f"to {raw_file}: {size} bytes")
            return
        c.emit({"domain": img.domain, "file": raw_file, "bytes": size, "abi": img.abi,
                "event_array_pages": mem.nr_pages},
               f"saved the FIFO pages of domain {img.domain} ({mem.nr_pages} event-array page(s), {mem.nr_vcpus} "
               f"vCPU(s)) to {raw_file}: {size} bytes")
        return
    if not (from_file or dump_core):  # a saved file or a core outlives the xenstore that named its ports
        _name(c, dumps)
    if c.json:
        _emit_json(c, dumps, len(dumps) == 1 and not all_domains)
        return
    from ..dump.render import render_dump

    c.page()
    for i, x in enumerate(dumps):
        if i:
            c.say()
        render_dump(x, c.text)
    c.stdout.flush()


def _emit_json(c: Ctx, dumps: list, one: bool) -> None:
    """``json.dumps`` of the dump (or the list of them), written as it is encoded (dump.model's json_chunks)."""
    out = c.stdout
    if not one:
        out.write("[")
    for i, x in enumerate(dumps):
        if i:
            out.write(", ")
        chunks = getattr(x, "json_chunks", None)
        if chunks is None:  # a 2-level dump: 4,096 ports at most
            import json

            out.write(json.dumps(x.as_dict()))
            continue
        for text in chunks():
            out.write(text)
    out.write("\n" if one else "]\n")
    out.flush()


def _name(c: Ctx, dumps: list) -> None:
    """Names for the ports the dumps show (what list names them: evidence/names.py), from the backend's
    xenstore and interrupts; a port whose channel this source cannot tell is named by xenstore alone."""
    from ..evidence.names import for_backend
    from .inspect import _notes

    shown = [(d.domain, row.channel if row.channel is not None else _unknown(row.port))
             for d in dumps for row in getattr(d, "words", None) or getattr(d, "ports", None) or ()]
    if not shown:
        return
    from ..errors import XenevtError

    try:
        backend = c.backend(read_only=True)
    except XenevtError:  # a source read without the backend (this kernel's memory): its ports go unnamed
        return
    names = for_backend(backend, shown)
    for d in dumps:
        d.names = names
    if not c.json:
        _notes(c, names)


def _unknown(port: int):
    """A port whose channel the source cannot tell, for names (evidence.model imported only for such a port)."""
    from ..evidence.model import PortFacts

    return PortFacts(port, "unknown")


def register(cli: click.Group) -> None:
    cli.add_command(dump)
