"""``xenevt dump``: the FIFO queues and event words of a domain, from the backend or a saved file."""

from __future__ import annotations

import click

from ..dump import build_dump, load_raw
from ..dump.rawfile import save_raw
from ..dump.render import render_dump
from ..engine import DomainMemory
from .context import Ctx, domain_option, json_option, pass_ctx


@click.command("dump")
@click.option("--from", "from_file", metavar="FILE", type=click.Path(dir_okay=True),
              help="Decode a raw dump saved with --raw (no backend needed).")
@click.option("--raw", "raw_file", metavar="FILE", type=click.Path(), help="Save the raw ABI pages to FILE instead.")
@click.option("--all-words", is_flag=True, help="List plain MASKED words too (the boot default).")
@click.option("--all-domains", is_flag=True, help="Every domain of the host.")
@domain_option
@json_option
@pass_ctx
def dump(c: Ctx, from_file, raw_file, all_words, all_domains, local_domain):
    """Queues per vCPU and priority as LINK chains (walked without changing a bit), READY bits,
    and every event word that is not the boot default, with its PENDING/MASKED/LINKED/BUSY flags.

    A broken chain (a LINK past the array, to an unlinked word, a cycle) is shown with the port
    where it breaks."""
    if from_file:
        if raw_file or all_domains:
            raise click.UsageError("--from decodes one saved file: it takes no --raw or --all-domains")
        raw = load_raw(from_file)
        dumps = [build_dump(raw.mem, raw.domain, f"file {from_file} ({raw.source})", channels=raw.channels(),
                            guest_known=raw.guest_known, all_words=all_words,
                            max_ports=raw.mem.nr_chans if raw.has_channels else None)]
    else:
        b = c.backend(read_only=True)
        domains = b.domains() if all_domains else [c.domain(local_domain)]
        if raw_file:
            if len(domains) != 1:
                raise click.UsageError("--raw saves one domain: pick it with --domain")
            d = domains[0]
            mem = _snapshot(b, d)
            size = save_raw(raw_file, mem, d, f"{b.name} domain {d}")
            c.emit({"domain": d, "file": raw_file, "bytes": size, "event_array_pages": mem.nr_pages},
                   f"saved the FIFO pages of domain {d} ({mem.nr_pages} event-array page(s), {mem.nr_vcpus} vCPU(s))"
                   f" to {raw_file}: {size} bytes")
            return
        dumps = []
        for d in domains:
            mem = _snapshot(b, d)
            dumps.append(build_dump(mem, d, b.name, channels=b.channels(d), all_words=all_words,
                                    max_ports=mem.nr_chans))
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
