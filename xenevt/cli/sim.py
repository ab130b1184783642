"""``xenevt sim …``: create, describe and reset the embedded simulated host."""

from __future__ import annotations

import os

import click

from ..errors import XenevtError
from ..sim.access import CONTROL_DOMAIN, check_host_call
from ..sim.domain import KERNEL_ABIS
from ..sim.host import DEFAULT_XEN, FILE_NAME, XEN_VERSIONS, SimHost, create_host
from . import SuggestingGroup
from .context import (
    DOMAIN,
    DOMAIN_ID,
    DOMAINS,
    MAX_PORTS,
    SIM_VCPU,
    VCPUS,
    Ctx,
    domain_option,
    json_option,
    pass_ctx,
    targets_option,
    yes_option,
)
from .inspect import render_info


@click.group("sim", cls=SuggestingGroup)
def sim():
    """Create, describe and change the embedded simulated Xen host.

    The embedded simulated Xen host (state in one file under --state DIR).

    \b
    Examples:
      xenevt sim info                      # the host (made at the default place on first use)
      xenevt --state ./h sim init --domains 3   # another host, in ./h
    """


def _in_use(state: str) -> str:
    """What makes a host live (open ports, consumers attached), in words; "" for none, or no host."""
    if not os.path.exists(os.path.join(state, FILE_NAME)):
        return ""
    try:
        with SimHost(state) as host:
            doms = host.info()["domains"]
            ports = {d["domain"]: d["ports_in_use"] for d in doms if d["ports_in_use"]}
            eaten = sorted((d["domain"], v) for d in doms for v in range(d["vcpus"])
                           if host.consumers.live(d["domain"], v))
    except XenevtError:  # (a host that cannot be opened is replaced as it is: nothing of it is live)
        return ""
    said = [f"{n} open port(s) in domain {d}" for d, n in sorted(ports.items())]
    said += [f"a consumer on vCPU {v} of domain {d}" for d, v in eaten]
    return "; ".join(said)


class DomainAbi(click.ParamType):
    """``DOMAIN=ABI`` (``1=2l``): one domain's kernel's choice, with an error naming the bad part."""

    name = "domain=abi"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        d, sep, a = str(value).partition("=")
        if not sep:
            self.fail(f"{value!r} is not DOMAIN=ABI (e.g. 1=2l)", param, ctx)
        if a not in KERNEL_ABIS:
            self.fail(f"ABI {a!r} of domain {d} is not one of {', '.join(KERNEL_ABIS)}", param, ctx)
        return DOMAIN_ID.convert(d, param, ctx), a


@sim.command("init")
@click.option("--domains", type=DOMAINS, default=2, show_default=True,
              help="Domains to create: dom0 (privileged) plus domUs.")
@click.option("--vcpus", type=VCPUS, default=2, show_default=True, help="vCPUs per domain online at boot.")
@click.option("--maxvcpus", type=VCPUS, default=None,
              help="vCPUs per domain (xl's maxvcpus; default --vcpus): those past --vcpus were never brought up.")
@click.option("--percpu", is_flag=True,
              help="Each guest's kernel binds what Linux binds per online CPU (VIRQ_TIMER, the IPIs).")
@click.option("--max-ports-dom0", type=MAX_PORTS, default=4096, show_default=True,
              help="Event-channel limit of dom0.")
@click.option("--max-ports-domu", type=MAX_PORTS, default=1024, show_default=True,
              help="Event-channel limit of each domU (Xen's default max_event_channels is 1023 ports).")
@click.option("--xen", type=click.Choice(list(XEN_VERSIONS)), default=DEFAULT_XEN, show_default=True,
              help="The Xen version whose rules to follow where versions differ (e.g. EVTCHNOP_status of a port "
                   "Xen itself consumes: EACCES on 4.17).")
@click.option("--abi", "abi_name", type=click.Choice(list(KERNEL_ABIS)), default="fifo", show_default=True,
              help="The event-channel ABI every guest kernel chooses at boot: fifo (a control block per vCPU and "
                   "one event-array page) or 2l (every port masked, as Linux with xen.fifo_events=0).")
@click.option("--domain-abi", "domain_abis", type=DomainAbi(), multiple=True, metavar="DOMAIN=ABI",
              help="One domain's kernel chooses otherwise, e.g. 1=2l (repeatable).")
@click.option("--guest-32", "guest_32", type=DOMAIN_ID, multiple=True, metavar="DOMAIN",
              help="This domain's guest is 32-bit (x86 compat): 1024 ports on the 2-level ABI, not 4096 "
                   "(repeatable).")
@click.option("--force", is_flag=True, help="Replace an existing host (asked first when it is in use).")
@yes_option
@json_option
@pass_ctx
def init(c: Ctx, domains, vcpus, maxvcpus, percpu, max_ports_dom0, max_ports_domu, xen, abi_name, domain_abis,
         guest_32, force, yes):
    """Create a fresh simulated host.

    Each guest kernel sets up the ABI it chooses (--abi, --domain-abi).

    \b
    Examples:
      xenevt --state ./h sim init                       # 2 domains, 2 vCPUs each, FIFO
      xenevt --state ./h sim init --force --domains 3 --vcpus 4 --domain-abi 1=2l
      xenevt --state ./h sim init --force --vcpus 2 --maxvcpus 4 --percpu
      xenevt --state ./h sim init --force --yes --domain-abi 1=2l --guest-32 1 --max-ports-domu 4096
    """
    if c.caller is not None:  # a domain of the host may not replace it (the machine's administrator may)
        check_host_call(c.caller, c.caller == CONTROL_DOMAIN, "create or replace the host")
    if force:
        in_use = _in_use(c.state)
        if in_use:
            c.confirm(f"replace the host at {c.state}, which is in use ({in_use})", yes)
    abis = dict(domain_abis)
    if maxvcpus is not None and maxvcpus < vcpus:
        raise click.BadParameter(f"{maxvcpus} is fewer than the {vcpus} vCPUs online at boot (--vcpus)",
                                 param_hint="'--maxvcpus'")
    path = create_host(c.state, domains, maxvcpus or vcpus, max_ports_dom0, max_ports_domu, force, xen=xen,
                       abi=abi_name, abis=abis, online=vcpus, percpu=percpu, guest_32=tuple(guest_32))
    with SimHost(c.state, read_only=True) as host:
        info = host.info()
    chosen = {abis.get(d, abi_name) for d in range(domains)}
    names = {"fifo": "FIFO", "2l": "2-level"}
    said = f"{names[chosen.pop()]} ABI" if len(chosen) == 1 else \
        "ABIs " + ", ".join(f"domain {d} {names[abis.get(d, abi_name)]}" for d in range(domains))
    c.emit(info, f"created a simulated Xen {xen} host at {path}: {domains} domain(s) (dom0 privileged), "
                 f"{vcpus} vCPU(s) each" + (f" online of {maxvcpus}" if maxvcpus and maxvcpus > vcpus else "")
           + f", {said}" + (f"; 32-bit guest(s): {', '.join(f'domain {d}' for d in sorted(set(guest_32)))}"
                            if guest_32 else ""))


@sim.command("info")
@json_option
@pass_ctx
def info(c: Ctx):
    """Show the host's domains, vCPUs, ports in use and arrays.

    Domains, vCPUs, ports in use and array sizes of the host.

    \b
    Examples:
      xenevt sim info
      xenevt --json sim info
    """
    with SimHost(c.sim_state(), read_only=True) as host:
        data = host.info()
    if c.json:
        c.emit(data)
    else:
        render_info(data, c.out)


@sim.command("reset")
@click.option("--all", "every", is_flag=True, help="Every domain (asked first; --yes where there is no terminal).")
@yes_option
@targets_option
@json_option
@pass_ctx
def reset(c: Ctx, every, yes):
    """Close every port of a domain (EVTCHNOP_reset).

    Close every port (EVTCHNOP_reset) as --as (default dom0) and put the domain back on the 2-level ABI;
    interdomain peers are left unbound.  A domain resets itself; a privileged one resets any other as a
    toolstack does (paused around the reset, since Xen refuses to reset a running domain not its own).
    Every target is checked before any is touched.

    \b
    Examples:
      xenevt -d 1 bind unbound 0           # dom1's port 1
      xenevt sim reset -d 1                # closed again
    """
    if every and c.domains_given:
        raise click.UsageError("give -d/--domain or --all, not both")
    if not every and not c.domains_given and c.caller is None:
        raise click.UsageError("name the domain to reset with -d DOMAIN (or --as it), or --all for every domain")
    caller = 0 if c.caller is None else c.caller
    with SimHost(c.sim_state()) as host:
        targets = sorted(host.domains) if every else c.domains()
        for domid in targets:  # EPERM/ESRCH for any target before any is touched
            host.check_access(caller, domid, "reset")
        before = {domid: len(host.list_ports(caller, domid)) for domid in targets}
        if every:
            c.confirm(f"reset every domain ({', '.join(f'{d}: {n} open port(s)' for d, n in before.items())})", yes)
        closed = {}
        for domid in targets:
            pause = domid != caller and not host.domains[domid].paused
            if pause:
                host.pause(domid, caller=caller)
            try:
                host.reset(caller, domid)
            finally:
                if pause:
                    host.pause(domid, False, caller=caller)
            closed[domid] = before[domid] - len(host.list_ports(caller, domid))
    c.emit({"domains": [{"domain": d, "closed": n} for d, n in closed.items()]},
           "; ".join(f"domain {d}: closed {n} port(s)" for d, n in closed.items()))


@sim.command("pause")
@click.argument("domid", type=DOMAIN, required=False)
@domain_option
@json_option
@pass_ctx
def pause(c: Ctx, domid):
    """Pause a domain, as xl pause does.

    Pause a domain, as ``xl pause`` does (the toolstack: --as a privileged domain): EVTCHNOP_reset may then
    name it.

    \b
    Examples:
      xenevt sim pause 1
      xenevt sim unpause 1
    """
    domid = toolstack_target(c, domid)
    with SimHost(c.sim_state()) as host:
        host.pause(domid, caller=toolstack_caller(c))
    c.emit({"domain": domid, "paused": True}, f"domain {domid} paused")


@sim.command("unpause")
@click.argument("domid", type=DOMAIN, required=False)
@domain_option
@json_option
@pass_ctx
def unpause(c: Ctx, domid):
    """Unpause a domain, as xl unpause does.

    Unpause a domain (``xl unpause``; the toolstack: --as a privileged domain).

    \b
    Examples:
      xenevt sim pause 1
      xenevt sim unpause 1
    """
    domid = toolstack_target(c, domid)
    with SimHost(c.sim_state()) as host:
        host.pause(domid, False, caller=toolstack_caller(c))
    c.emit({"domain": domid, "paused": False}, f"domain {domid} unpaused")


@sim.command("destroy")
@click.argument("domid", type=DOMAIN, required=False)
@click.option("--dying", is_flag=True, help="Leave it dying (still listed, as while something holds a reference "
              "to it), not gone.")
@click.option("--all", "every", is_flag=True, help="Every domain but the privileged ones (asked first; --yes where "
              "there is no terminal).")
@yes_option
@domain_option
@json_option
@pass_ctx
def destroy(c: Ctx, domid, dying, every, yes):
    """Destroy a domain, as xl destroy does.

    Destroy a domain as ``xl destroy`` does, as --as (default dom0): Xen's evtchn_destroy() closes every port
    of it, so each interdomain peer goes back to unbound, waiting for the dead domid; the domain is then gone
    (ESRCH for every call naming it), or with --dying still listed as dying.  Run again on a dying domain to
    finish it.

    \b
    Examples:
      xenevt --state ./h sim init --domains 3
      xenevt --state ./h sim destroy 2 --dying   # still listed, dying
      xenevt --state ./h sim destroy 2           # gone
    """
    caller = toolstack_caller(c)
    with SimHost(c.sim_state()) as host:
        if every:
            if domid is not None or c.domains_given:
                raise click.UsageError("give a DOMID (or -d) or --all, not both")
            targets = sorted(d for d, dom in host.domains.items() if not dom.privileged)
            c.confirm(f"destroy every unprivileged domain ({', '.join(map(str, targets)) or 'none'})", yes)
        else:
            targets = [toolstack_target(c, domid)]
        for target in targets:
            _destroy(c, host, caller, target, dying)


def _destroy(c: Ctx, host, caller: int, domid: int, dying: bool) -> None:
    dom = host.domain(domid, "destroy")
    ports = {d: {st.port for st in host.list_ports(0, d)} for d in host.domains if d != domid}
    closed = len(host.list_ports(0, domid))
    host.destroy_domain(caller, domid, dying)
    peers = sorted((d, p) for d in host.domains if d != domid for p in ports[d]
                   if (st := host.status(0, d, p)).state == "unbound" and st.remote_domain == domid)
    del dom
    what = "dying" if dying else "gone"
    c.emit({"domain": domid, "state": what, "closed": closed,
            "waiting": [{"domain": d, "port": p} for d, p in peers]},
           f"domain {domid} destroyed ({what}): closed {closed} port(s)"
           + (f"; {len(peers)} peer port(s) now unbound waiting for it: "
              + ", ".join(f"d{d}:{p}" for d, p in peers) if peers else ""))


@sim.command("xen-port")
@click.argument("domid", type=DOMAIN, required=False)
@click.option("--remote", type=DOMAIN, default=0, show_default=True, help="The domain that may bind to it.")
@click.option("--vcpu", type=SIM_VCPU, default=0, show_default=True, help="Its notify vCPU.")
@domain_option
@json_option
@pass_ctx
def xen_port(c: Ctx, domid, remote, vcpu):
    """Allocate a port that Xen itself consumes.

    Allocate a port that Xen itself consumes, as an ioreq server or a vm_event ring does
    (alloc_unbound_xen_event_channel): the guest cannot send on, close or move it, a reset leaves it, and
    EVTCHNOP_status refuses it on Xen 4.17 (EACCES) but reports it on 4.20.

    \b
    Examples:
      xenevt sim xen-port 1                # dom1's port, for an ioreq server in dom0
    """
    domid = toolstack_target(c, domid)
    with SimHost(c.sim_state()) as host:
        port = host.xen_port(domid, remote, vcpu, caller=toolstack_caller(c))
    c.emit({"domain": domid, "port": port, "state": "unbound", "vcpu": vcpu, "remote_domain": remote,
            "xen_owned": True},
           f"d{domid}:{port}: consumed by Xen, waiting for domain {remote}")


@sim.command("check")
@click.option("--repair", is_flag=True, help="Mend what can be mended (each repair is printed), then check again.")
@json_option
@pass_ctx
def check(c: Ctx, repair):
    """Report every inconsistency of the state file.

    Report every inconsistency of the state file, one line each (domain, port or vCPU queue, field): peers
    that disagree, channel records against event words, queues, an update cut short by a kill.  Exit 0 when
    clean, 1 when not (after --repair: when something is left).

    \b
    Examples:
      xenevt sim check
      xenevt sim check --repair            # mend what can be mended
    """
    from ..sim.check import check_host

    if repair and c.caller is not None:  # mending the file is the machine's administrator's, not a domain's
        check_host_call(c.caller, c.caller == CONTROL_DOMAIN, "repair the host")
    left, done, notes = check_host(c.state, repair)
    if c.json:
        c.emit({"state_file": os.path.join(c.state, FILE_NAME), "inconsistencies": left, "repaired": done,
                "notes": notes, "clean": not left})
    else:
        for line in done:
            c.out.print(f"repaired: {line}")
        for line in left:
            c.out.print(line)
        for line in notes:
            c.note(f"note: {line}")
        if not left:
            c.out.print("clean" + (f" after {len(done)} repair(s)" if done else ""))
    if left:
        click.get_current_context().exit(1)


def toolstack_target(c: Ctx, domid: int | None) -> int:
    """The one domain a toolstack command acts on: its DOMID argument or -d (the same domain if both), else
    --as's; never a default, as these change a domain."""
    if domid is None and not c.domains_given and c.caller is None:
        raise click.UsageError("name the domain: DOMID or -d DOMAIN")
    return c.domain(domid)


def toolstack_caller(c: Ctx) -> int:
    """The domain a toolstack operation (pause, destroy, device add, Xen's own ports) runs as: --as, else dom0."""
    return CONTROL_DOMAIN if c.caller is None else c.caller


@sim.command("libpath")
@json_option
@pass_ctx
def libpath(c: Ctx):
    """Print the folder holding libxenevtchn-sim.so.

    Print the folder holding libxenevtchn-sim.so (built on first use): Xen's C libraries over
    the simulator.  LD_LIBRARY_PATH=$(xenevt sim libpath) ./program runs an unmodified
    libxenevtchn program as dom0 ($XENEVT_SIM_DOMAIN to act as another domain).

    \b
    Examples:
      xenevt sim libpath
      LD_LIBRARY_PATH=$(xenevt sim libpath) ./program   # your libxenevtchn program, as dom0
    """
    from ..sim.simlib import libpath as build

    c.emit({"libpath": build()}, build())


def register(cli: click.Group) -> None:
    from . import simdevice, simreplay, simvcpu

    simdevice.register(sim)
    simvcpu.register(sim)
    simreplay.register(sim)
    cli.add_command(sim)
