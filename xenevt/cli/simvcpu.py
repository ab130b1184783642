"""``xenevt sim vcpu down|up D V``: a guest's CPU taken offline or online, as Linux and Xen do it."""

from __future__ import annotations

import click

from ..engine.layout import VCPU_STATES
from ..sim.host import SimHost
from . import SuggestingGroup
from .context import DOMAIN, SIM_VCPU, Ctx, domain_option, json_option, pass_ctx


@click.group("vcpu", cls=SuggestingGroup)
def vcpu():
    """Take a guest's vCPUs down and bring them up.

    A guest's vCPUs taken down and brought up: Linux's CPU hotplug path over Xen's VCPUOP_down and VCPUOP_up.

    \b
    Examples:
      xenevt sim vcpu down 1 1            # dom1's CPU 1 offline, as echo 0 > .../cpu1/online does
      xenevt sim vcpu up 1 1
    """


_XEN_ONLY = click.option("--xen-only", is_flag=True,
                         help="Make the hypercall alone, behind the guest kernel's back: no port moved, closed or "
                              "bound (events bound to a down vCPU still queue there).")


def _target(first: str | None, second: str | None) -> tuple[int | None, int]:
    """``DOMID VCPU``, or ``VCPU`` alone (the domain then by the domain rule: -d, else --as's)."""
    ctx = click.get_current_context()
    args = [a for a in (first, second) if a is not None]
    if not args:
        raise click.UsageError("name the vCPU: DOMID VCPU, or -d DOMAIN VCPU", ctx)
    domid = DOMAIN.convert(args[0], None, ctx) if len(args) == 2 else None
    return domid, SIM_VCPU.convert(args[-1], None, ctx)


def _run(c: Ctx, domid: int | None, v: int, up: bool, xen_only: bool) -> None:
    if domid is None and not c.domains_given and c.caller is None:
        raise click.UsageError("name the domain: DOMID VCPU, or -d DOMAIN")
    domid = c.domain(domid)
    caller = domid if c.caller is None else c.caller  # the guest itself, or --as (the toolstack: xl vcpu-set)
    with SimHost(c.sim_state()) as host:
        if xen_only:
            host.vcpu_op(caller, domid, v, up)
            steps = [f"VCPUOP_{'up' if up else 'down'} of vCPU {v}"]
        else:
            steps = (host.cpu_up if up else host.cpu_down)(caller, domid, v)
        state = VCPU_STATES[host.file.domains[domid].mem.vcpu_state(v)]
    if c.json:
        c.emit({"domain": domid, "vcpu": v, "state": state, "steps": steps})
        return
    for line in steps:
        c.out.print(line)
    c.out.print(f"vCPU {v} of domain {domid} is {state}")


@vcpu.command("down")
@click.argument("first", metavar="DOMID", required=False)
@click.argument("second", metavar="VCPU", required=False)
@_XEN_ONLY
@domain_option
@json_option
@pass_ctx
def down(c: Ctx, first, second, xen_only):
    """Take a guest's vCPU offline, as Linux does.

    Take vCPU VCPU of domain DOMID (or -d's) offline as Linux does (its ports that may move go to an online vCPU, masked
    around EVTCHNOP_bind_vcpu; VCPUOP_down; its IPIs and per-CPU VIRQs closed; its queues drained, the events
    left pending).  Xen keeps the vCPU's control block.  As the guest itself, or --as a privileged domain.

    \b
    Examples:
      xenevt sim vcpu down 1 1
      xenevt -d 1 sim vcpu down 1 --xen-only   # VCPUOP_down alone: events bound to it still queue there
    """
    _run(c, *_target(first, second), False, xen_only)


@vcpu.command("up")
@click.argument("first", metavar="DOMID", required=False)
@click.argument("second", metavar="VCPU", required=False)
@_XEN_ONLY
@domain_option
@json_option
@pass_ctx
def up(c: Ctx, first, second, xen_only):
    """Bring a guest's vCPU online, as Linux does.

    Bring vCPU VCPU of domain DOMID (or -d's) online as Linux does (its per-CPU ports bound at the lowest free
    numbers, a control block registered only if it never had one, VCPUOP_up).  As the guest itself, or --as a
    privileged domain.

    \b
    Examples:
      xenevt sim vcpu up 1 1
      xenevt sim vcpu up 1 1 --xen-only     # VCPUOP_up alone
    """
    _run(c, *_target(first, second), True, xen_only)


def register(group: click.Group) -> None:
    group.add_command(vcpu)
