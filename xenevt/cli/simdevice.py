"""``xenevt sim device add|list``: PV devices as a toolstack and its drivers connect them, with their event
channels and xenstore nodes."""

from __future__ import annotations

import click

from ..safetext import term
from ..sim.host import SimHost
from . import SuggestingGroup
from .context import DOMAIN, QUEUES, Ctx, domain_option, json_option, pass_ctx, settled
from .sim import toolstack_caller, toolstack_target


@click.group("device", cls=SuggestingGroup)
def device():
    """Add and list PV devices with their event channels.

    PV devices as a toolstack and its drivers connect them: their event channels and xenstore nodes.

    \b
    Examples:
      xenevt sim device add vif 1          # dom1's vif 0, served by dom0
      xenevt sim device list
    """


@settled
@device.command("add")
@click.argument("kind", type=click.Choice(["vif", "vbd", "console", "store"]))
@click.argument("domid", type=DOMAIN, required=False)
@click.option("--backend", type=DOMAIN, default=0, show_default=True, help="The domain serving it.")
@click.option("--queues", type=QUEUES, default=1, show_default=True,
              help="Queues (vif, vbd): each has its own channel, a vif's a tx and an rx one.")
@domain_option
@json_option
@pass_ctx
def device_add(c: Ctx, kind, domid, backend, queues):
    """Add a PV device to DOMID, its ports bound by the backend.

    Add a vif or vbd to DOMID (the frontend allocates a port per queue and direction, writes it to
    /local/domain/DOMID/device/KIND/ID/, and the backend binds interdomain to it), or its console or
    xenstore port (the domain builder allocates it, xenconsoled or xenstored binds it).

    \b
    Examples:
      xenevt sim device add vif 1 --queues 2   # two queues: a tx and an rx port each
      xenevt sim device add console 1
    """
    domid = toolstack_target(c, domid)
    with SimHost(c.sim_state()) as host:
        made = host.device_add(kind, domid, backend, queues, caller=toolstack_caller(c))
    what, base = (f"{kind} {made['id']}", f"/{made['id']}/") if "id" in made else (kind, f"/{kind}/")
    # each port in the schema's words: the frontend's port, its backend end as the remote, the node naming it
    ports = [{"domain": domid, "port": p["port"], "remote_domain": backend, "remote_port": p["peer"],
              "node": p["key"]} for p in made["ports"]]
    c.emit(made | {"ports": ports}, f"domain {domid}: {what} served by domain {backend}: "
           + ", ".join(f"d{domid}:{p['port']} ↔ d{backend}:{p['remote_port']} ({p['node'].split(base, 1)[-1]})"
                       for p in ports))


@device.command("list")
@json_option
@pass_ctx
def device_list(c: Ctx):
    """List every port the simulated xenstore names.

    Every port the simulated xenstore names: its node and value.

    \b
    Examples:
      xenevt sim device add vbd 1
      xenevt sim device list
    """
    with SimHost(c.sim_state(), read_only=True) as host:
        nodes = host.xenstore_nodes()
        # xenstored shows a domain its own subtree only (dom0 every node)
        hidden = () if c.caller is None else tuple(f"/local/domain/{d}/" for d in host.domains
                                                   if not host.may(c.caller, d, "read the xenstore nodes of"))
    ends = ("/port", "/event-channel", "/event-channel-tx", "/event-channel-rx")
    ports = {k: v for k, v in sorted(nodes.items()) if k.endswith(ends) and not k.startswith(hidden)}
    if c.json:
        c.emit({"nodes": ports})
        return
    if not ports:
        c.out.print("no devices (add one with `xenevt sim device add vif DOMID`)")
    for k, v in ports.items():
        c.out.print(f"{term(k)} = {term(v)}")  # what a domain wrote: escaped before the terminal sees it


def register(sim: click.Group) -> None:
    sim.add_command(device)
