"""``xenevt bind …``: allocate and bind ports (the EVTCHNOP_bind_* and alloc_unbound hypercalls)."""

from __future__ import annotations

import click

from .context import DOMAIN, PORT, VCPU, VIRQ, Ctx, domain_option, json_option, pass_ctx

HELP_TAIL = ("Prints the new port.  On the simulator the port stays bound until closed; "
             "on real Xen a port bound through /dev/xen/evtchn lives as long as the process that bound it.")


@click.group("bind")
def bind():
    """Open a port: unbound (for a peer to connect), interdomain, VIRQ or IPI."""


def _done(c: Ctx, domain: int, port: int) -> None:
    st = c.backend().status(domain, port)
    c.emit(st.as_dict(), str(port))


@bind.command("unbound", epilog=HELP_TAIL)
@click.argument("remote_domain", type=DOMAIN)
@domain_option
@json_option
@pass_ctx
def unbound(c: Ctx, remote_domain, local_domain):
    """Allocate a port that REMOTE_DOMAIN may bind to (EVTCHNOP_alloc_unbound)."""
    d = c.domain(local_domain)
    _done(c, d, c.backend().bind_unbound(d, remote_domain))


@bind.command("interdomain", epilog=HELP_TAIL)
@click.argument("remote_domain", type=DOMAIN)
@click.argument("remote_port", type=PORT)
@domain_option
@json_option
@pass_ctx
def interdomain(c: Ctx, remote_domain, remote_port, local_domain):
    """Connect to REMOTE_PORT of REMOTE_DOMAIN, which must be unbound for this domain.

    Xen sets the new local port pending, so an event sent before the bind is not lost."""
    d = c.domain(local_domain)
    _done(c, d, c.backend().bind_interdomain(d, remote_domain, remote_port))


@bind.command("virq", epilog=HELP_TAIL)
@click.argument("virq", type=VIRQ)
@click.option("--vcpu", type=VCPU, default=0, show_default=True, help="vCPU (per-vCPU VIRQs: timer, debug, …).")
@domain_option
@json_option
@pass_ctx
def virq(c: Ctx, virq, vcpu, local_domain):
    """Bind a virtual IRQ (a name such as timer, console, debug, or its number)."""
    d = c.domain(local_domain)
    _done(c, d, c.backend().bind_virq(d, virq, vcpu))


@bind.command("ipi", epilog=HELP_TAIL)
@click.option("--vcpu", type=VCPU, default=0, show_default=True, help="vCPU the IPI is delivered to.")
@domain_option
@json_option
@pass_ctx
def ipi(c: Ctx, vcpu, local_domain):
    """Bind an inter-processor interrupt port (a notify on it raises it on --vcpu)."""
    d = c.domain(local_domain)
    _done(c, d, c.backend().bind_ipi(d, vcpu))


def register(cli: click.Group) -> None:
    cli.add_command(bind)
