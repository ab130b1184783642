"""``xenevt sim …``: create, describe and reset the embedded simulated host."""

from __future__ import annotations

import click

from ..sim.host import SimHost, create_host
from .context import DOMAIN, Ctx, json_option, pass_ctx
from .inspect import render_info


@click.group("sim")
def sim():
    """The embedded simulated Xen host (state in one file under --state DIR)."""


@sim.command("init")
@click.option("--domains", type=click.IntRange(1, 250), default=2, show_default=True,
              help="Domains to create: dom0 (privileged) plus domUs.")
@click.option("--vcpus", type=click.IntRange(1, 256), default=2, show_default=True, help="vCPUs per domain.")
@click.option("--max-ports-dom0", type=click.IntRange(2, 1 << 17), default=4096, show_default=True,
              help="Event-channel limit of dom0.")
@click.option("--max-ports-domu", type=click.IntRange(2, 1 << 17), default=1024, show_default=True,
              help="Event-channel limit of each domU (Xen's default max_event_channels is 1023 ports).")
@click.option("--force", is_flag=True, help="Replace an existing host.")
@json_option
@pass_ctx
def init(c: Ctx, domains, vcpus, max_ports_dom0, max_ports_domu, force):
    """Create a fresh host: each guest has a control block per vCPU and one event-array page."""
    path = create_host(c.state, domains, vcpus, max_ports_dom0, max_ports_domu, force)
    with SimHost(c.state, read_only=True) as host:
        info = host.info()
    c.emit(info, f"created a simulated Xen host at {path}: {domains} domain(s) (dom0 privileged), "
                 f"{vcpus} vCPU(s) each, FIFO ABI")


@sim.command("info")
@json_option
@pass_ctx
def info(c: Ctx):
    """Domains, vCPUs, ports in use and array sizes of the host."""
    with SimHost(c.state, read_only=True) as host:
        data = host.info()
    if c.json:
        c.emit(data)
    else:
        render_info(data, c.out)


@sim.command("reset")
@click.option("--domain", "-d", "domains", type=DOMAIN, multiple=True,
              help="Only this domain (repeatable); default every domain.")
@json_option
@pass_ctx
def reset(c: Ctx, domains):
    """Close every port (EVTCHNOP_reset), as dom0; interdomain peers are left unbound."""
    with SimHost(c.state) as host:
        targets = list(domains) or sorted(host.domains)
        closed = {}
        for domid in targets:
            before = len(host.list_ports(0, domid))
            host.reset(0, domid)
            closed[domid] = before - len(host.list_ports(0, domid))
    c.emit({"closed": {str(k): v for k, v in closed.items()}},
           "; ".join(f"domain {d}: closed {n} port(s)" for d, n in closed.items()))


@sim.command("libpath")
@pass_ctx
def libpath(c: Ctx):
    """Print the folder holding libxenevtchn-sim.so (built on first use): Xen's C libraries over
    the simulator.  LD_LIBRARY_PATH=$(xenevt sim libpath) ./program runs an unmodified
    libxenevtchn program as dom0 ($XENEVT_SIM_DOMAIN to act as another domain)."""
    from ..sim.simlib import libpath as build

    c.emit({"libpath": build()}, build())


def register(cli: click.Group) -> None:
    cli.add_command(sim)
