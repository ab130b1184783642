"""``xenevt sim device add|list``: PV devices as a toolstack and its drivers connect them, with their event
channels and xenstore nodes."""

from __future__ import annotations

import time

import click

from ..engine.layout import VCPU_ONLINE
from ..safetext import term
from ..sim.host import SimHost
from . import SuggestingGroup
from .context import COUNT, DOMAIN, PORT, QUEUES, REQUESTS, TIMEOUT, Ctx, domain_option, json_option, pass_ctx, settled
from .sim import toolstack_caller, toolstack_target


@click.group("device", cls=SuggestingGroup)
def device():
    """Add and list PV devices with their event channels.

    PV devices as a toolstack and its drivers connect them: their event channels and xenstore nodes.

    \b
    Examples:
      xenevt sim device add vif 1          # dom1's vif 0, served by dom0
      xenevt sim device list
      xenevt -d 1 sim device push 1 --count 500 --requests 0; xenevt sim device serve 0 --for 0.5
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


def _own(c: Ctx, domid: int | None) -> tuple[int, int]:
    """(the domain acted on, the caller): a guest's own kernel or driver, as notify and wait act."""
    domid = c.domain(domid)
    return domid, domid if c.caller is None else c.caller


@device.command("push")
@click.argument("port", type=PORT)
@click.option("--requests", type=REQUESTS, default=1, show_default=True,
              help="Requests put on the ring before each notify; 0: a notify with no work (a rogue peer).")
@click.option("--count", type=COUNT, default=1, show_default=True, help="Notifies to make, one after another.")
@domain_option
@json_option
@pass_ctx
def device_push(c: Ctx, port, requests, count):
    """Put requests on a device's ring and notify, as its driver does.

    As the driver at this end of a PV device's channel (-d's domain): put --requests on the shared ring, then
    EVTCHNOP_send on PORT, --count times.  The other end's kernel (`sim device serve`) finds them as work; a notify
    with no request is a spurious event there, and a run of them makes Linux hold its EOIs back (lateeoi).

    \b
    Examples:
      xenevt sim device add vif 1                             # its tx channel: dom1's port 1
      xenevt -d 1 sim device push 1 --count 100             # a well-behaved netfront
      xenevt -d 1 sim device push 1 --count 100 --requests 0  # a rogue one: spurious events at the backend
    """
    domid, caller = _own(c, None)
    with SimHost(c.sim_state()) as host:
        for _ in range(count):
            host.push(caller, domid, port, requests)
    c.emit({"domain": domid, "port": port, "notifies": count, "requests": requests * count},
           f"domain {domid} port {port}: {count} notif{'y' if count == 1 else 'ies'}, {requests * count} requests")


@device.command("serve")
@click.argument("domid", type=DOMAIN, required=False)
@click.option("--for", "seconds", type=TIMEOUT, default=1.0, show_default=True,
              help="How long the kernel runs (0: one pass).")
@domain_option
@json_option
@pass_ctx
def device_serve(c: Ctx, domid, seconds):
    """Run a domain's kernel with its PV drivers for a while.

    Run DOMID's (or -d's) simulated Linux on each of its online vCPUs for --for seconds: its upcalls, each PV
    device's driver (a vif's or vbd's channel is lateeoi: masked before it is acked, EOIed when the driver is
    done, the EOI held back when it found no work more than once in a row) and the delayed EOIs.  Then each of
    its devices' counters, as Linux's sysfs shows them.  The guest's own kernel: as the domain itself.

    \b
    Examples:
      xenevt sim device serve 0 --for 5       # dom0's netback and blkback, five seconds
      xenevt --json sim device serve 0 --for 0
    """
    domid, caller = _own(c, domid)
    with SimHost(c.sim_state()) as host:
        states = host.domain(domid, "run the kernel of").mem.vcpu_states()
        vcpus = [v for v, state in enumerate(states) if state == VCPU_ONLINE]
        for v in vcpus:
            host.claim_vcpu(domid, v, caller=caller)
        handled, end = 0, time.monotonic() + seconds
        while True:
            for v in vcpus:
                handled += len(host.serve(domid, v, min(0.01, seconds)))
            if time.monotonic() >= end:
                break
        devices = host.xenbus_counters(domid)
    if c.json:
        c.emit({"domain": domid, "handled": handled, "devices": [
            {"node": node, "name": name, "events": k.events, "spurious_events": k.spurious_events,
             "jiffies_eoi_delayed": k.jiffies_eoi_delayed} for node, name, k in devices]})
        return
    c.out.print(f"domain {domid}: {handled} event(s) handled in {seconds:g} s")
    for node, name, k in devices:  # (names from xenstore, which the domains write: escaped)
        c.out.print(f"  xenbus {term(node)} ({term(name)}): events {k.events}, spurious_events "
                    f"{k.spurious_events}, jiffies_eoi_delayed {k.jiffies_eoi_delayed}")


def register(sim: click.Group) -> None:
    sim.add_command(device)
