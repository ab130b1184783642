"""``xenevt dump``: a domain's event-channel memory, FIFO queues or 2-level bitmaps, from wherever it is.

The options say which memory to read: the backend's own view (the simulator's
memory), frames mapped through privcmd (``--gfn``/``--control`` for FIFO,
``--shared-info``/``--vcpu-info`` for 2-level), this kernel's memory
(``--self``), another domain's kernel read from dom0 through its page tables
(``--domain D --system-map FILE``), a kernel in an ``xl dump-core`` file
(``--dump-core FILE --system-map FILE``), or a raw file saved earlier
(``--from``); ``xenevt.Source.from_options``
says which (and refuses what does not go together), ``memory.open_sources``
picks its reader, and one decoder reads the image every source gives, of the
ABI it says (the engine's walker for FIFO, its upcall scan on a copy for
2-level).
"""

from __future__ import annotations

import click

from .context import (
    CB_OFFSET,
    GFN,
    KASLR_OFFSET,
    Ctx,
    Pair,
    _IntRange,
    domains_option,
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
@click.option("--all-words", is_flag=True, help="List every port's word (FIFO) or bits (2-level), those at rest "
              "too: 0 and plain MASKED.")
@click.option("--kcore", default="/proc/kcore", hidden=True)
@click.option("--kallsyms", default="/proc/kallsyms", hidden=True)
@click.option("--cpus-file", default="/sys/devices/system/cpu/possible", hidden=True)
@domains_option
@json_option
@pass_ctx
@whole_host
def dump(c: Ctx, from_file, self_kernel, system_map, dump_core, kaslr_offset, gfns, controls, control_gfn, offset,
         shared_info, vcpu_infos, fmt, output, raw_file, all_words, kcore, kallsyms, cpus_file):
    """Show a domain's event-channel queues, bits and words.

    FIFO: queues per vCPU and priority as LINK chains (walked without changing a bit), READY bits,
    and every event word that is not the boot default, with its PENDING/MASKED/LINKED/BUSY flags.
    A broken chain (a LINK past the array, to an unlinked word, a cycle) is shown with the port
    where it breaks.

    2-level: each vCPU's evtchn_upcall_pending, evtchn_upcall_mask and evtchn_pending_sel, the
    ports Linux's next upcall on it would deliver, in order, and every port pending or open with
    its pending, mask and selector bits.

    \b
    Examples:
      xenevt dump -d 1                     # dom1's queues and flagged words
      xenevt dump --raw d0.raw             # save dom0's event-channel pages
      xenevt dump --from d0.raw --json     # decode them later, anywhere
      xenevt dump --self                   # on Xen: this guest's own kernel (root)
    """
    if fmt == "json":
        c.json = True
    if fmt == "raw" or raw_file:
        raw_file = raw_file or output or "-"
        if raw_file == "-" and c.stdout_is_terminal():
            raise click.UsageError("--format raw writes binary: give --output FILE or redirect stdout")
    elif output:
        raise click.UsageError("--output goes with --format raw")
    from .. import Source
    from ..errors import UsageError

    cbs = list(controls) + ([(control_gfn, offset)] if control_gfn is not None else [])
    all_domains = c.all_domains
    named = [] if all_domains and not c.domains_given else c.domains()  # (-d with --all-domains: refused there)
    try:
        source = Source.from_options(domains=tuple(named[:1]), all_domains=all_domains, from_file=from_file,
                                     self_kernel=self_kernel, gfns=gfns, controls=cbs, shared_info=shared_info,
                                     vcpu_infos=vcpu_infos, system_map=system_map, dump_core=dump_core,
                                     kaslr_offset=kaslr_offset)
    except UsageError as e:  # (worded as click's: "xenevt: dump: …", exit 2)
        raise click.UsageError(str(e)) from None
    if from_file and raw_file and raw_file != "-":
        raise click.UsageError("--from decodes a saved file: it takes no --raw")
    if raw_file and (all_domains or len(named) > 1):
        raise click.UsageError("--raw saves one domain: pick it with one --domain")
    if len(named) > 1 and source.kind != "live":
        raise click.UsageError(f"{_flag(source.kind)} reads one domain: "
                               f"{' and '.join(f'domain {d}' for d in named)} were given")
    if source.kind == "self":  # (this kernel's files, which tests point elsewhere)
        source = Source("self", kcore=kcore, kallsyms=kallsyms, cpus_file=cpus_file)
    host = c.host
    if raw_file == "-":
        out = click.get_binary_stream("stdout")  # type: ignore[operator]  # (click 8.5: deprecated, untyped)
        out.write(host.encode_raw(source))
        out.flush()
        return
    if raw_file:
        saved = host.save_raw(raw_file, source)
        vcpus = saved.pop("vcpus")
        size, domain = saved["bytes"], saved["domain"]
        if saved["abi"] == "2-level":
            c.emit(saved, f"saved the 2-level state of domain {domain} (shared_info and {vcpus} vcpu_info(s)) "
                          f"to {raw_file}: {size} bytes")
            return
        c.emit(saved, f"saved the FIFO pages of domain {domain} ({saved['event_array_pages']} event-array page(s), "
                      f"{vcpus} vCPU(s)) to {raw_file}: {size} bytes")
        return
    if len(named) > 1:  # (several domains of the host's own view: one live source each)
        dumps = [x for d in named for x in host.dump(Source.live(d), all_words=all_words)]
    else:
        dumps = host.dump(source, all_words=all_words)
    if c.domains_given and source.kind in FILE_KINDS:  # a file, a core, this kernel: its domain is its own
        held = sorted({x.domain for x in dumps})
        if held != named:
            raise click.UsageError(f"{_flag(source.kind)} holds domain {', '.join(map(str, held)) or 'none'}, not "
                                   f"{' and '.join(f'domain {d}' for d in named)} as -d/--domain says")
    if dumps and dumps[0].names is not None and not c.json:
        from .inspect import _notes

        _notes(c, dumps[0].names)
    if c.json:
        _emit_json(c, dumps)
        return
    from ..dump.render import render_dump

    c.page()
    for i, x in enumerate(dumps):
        if i:
            c.say()
        render_dump(x, c.text)
    c.stdout.flush()


FILE_KINDS = ("raw", "self")  # sources whose domain is the one they hold (dump-core's is -d's)


def _flag(kind: str) -> str:
    return {"raw": "--from", "self": "--self", "frames": "--gfn", "shared-info": "--shared-info",
            "guest-kernel": "--system-map", "dump-core": "--dump-core"}.get(kind, kind)


def _emit_json(c: Ctx, dumps: list) -> None:
    """``{"schema": …, "domains": [dump, …]}`` (one domain or several, the same shape), written as it is encoded:
    byte for byte its ``json.dumps`` (dump.model's json_chunks)."""
    from ..schema import TAG

    out = c.stdout
    out.write(f'{{{TAG}, "domains": [')
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
    out.write("]}\n")
    out.flush()


def register(cli: click.Group) -> None:
    cli.add_command(dump)
