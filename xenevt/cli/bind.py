"""``xenevt bind …``: allocate and bind ports (the EVTCHNOP_bind_* and alloc_unbound hypercalls)."""

from __future__ import annotations

import click

from ..errors import ChannelError
from . import SuggestingGroup
from .context import (
    COUNT,
    DOMAIN,
    PING_INTERVAL,
    PORT,
    TIMEOUT,
    VCPU,
    VIRQ,
    Ctx,
    consume_events,
    domain_option,
    json_option,
    pass_ctx,
)

HELP_TAIL = ("Prints the new port.  On the simulator the port stays bound until closed, and the command returns "
             "unless --count, --timeout or --notify-every asks it to wait.  On real Xen a port bound through "
             "/dev/xen/evtchn lives as long as the process that bound it, so the command holds it in the "
             "foreground: it prints each event as it arrives and unmasks the port again, until Ctrl-C, --count "
             "events or --timeout seconds; then the port is closed.")


@click.group("bind", cls=SuggestingGroup)
def bind():
    """Open a port: unbound, interdomain, VIRQ or IPI.

    Open a port: unbound (for a peer to connect), interdomain, VIRQ or IPI.

    \b
    Examples:
      xenevt -d 1 bind unbound 0           # dom1 offers a port to dom0: prints it (1)
      xenevt bind interdomain 1 1          # dom0 connects to dom1's port 1
      xenevt bind virq timer --vcpu 1      # dom0's timer VIRQ on its vCPU 1
    """


def hold_options(f):
    f = click.option("--notify-every", type=PING_INTERVAL, default=None, metavar="S",
                     help="While holding, send on the port every S seconds (a ping-pong with the peer).")(f)
    f = click.option("--timeout", "-t", type=TIMEOUT, default=None,
                     help="Hold the port at most S seconds.")(f)
    f = click.option("--count", "-n", type=COUNT, default=None, help="Hold the port until N events arrived.")(f)
    return f


def _done(c: Ctx, domain: int, port: int, count=None, timeout=None, notify_every=None) -> None:
    st = c.host.status(domain, port)
    c.emit(st.as_dict(c.two_level(domain, [st])) if c.json else {}, str(port))
    if c.host.ports_live_with_process or count or timeout is not None or notify_every:
        _hold(c, domain, port, st.vcpu, count, timeout, notify_every)


def _hold(c: Ctx, domain: int, port: int, vcpu: int, count, timeout, notify_every) -> None:
    """Wait for events on the new port (the process keeps it bound meanwhile), pinging if asked."""
    host = c.host
    if c.stdout_is_terminal() and not c.json:
        c.note(f"xenevt: holding port {port} of domain {domain}"
                    f"{f' for {count} event(s)' if count else ''}{f', {timeout:g} s at most' if timeout else ''}"
                    " (Ctrl-C to release)")
    got, stopped = consume_events(c, domain, vcpu, count, timeout, lambda: host.notify(domain, port), notify_every)
    if stopped:  # Ctrl-C: the port is released as asked, and the exit says it was interrupted (128 + SIGINT)
        c.note(f"xenevt: released port {port} after {got} event(s)")
        raise click.exceptions.Exit(130)
    if count is not None and got < count:
        raise ChannelError(f"timed out after {timeout:g} s with {got} of {count} event(s) on port {port} of domain "
                           f"{domain}", domain=domain, port=port, call="bind")


@bind.command("unbound", epilog=HELP_TAIL)
@click.argument("remote_domain", type=DOMAIN)
@hold_options
@domain_option
@json_option
@pass_ctx
def unbound(c: Ctx, remote_domain, count, timeout, notify_every):
    """Allocate a port that REMOTE_DOMAIN may bind to.

    Allocate a port that REMOTE_DOMAIN may bind to (EVTCHNOP_alloc_unbound).

    \b
    Examples:
      xenevt -d 1 bind unbound 0           # dom1 offers a port to dom0
      xenevt --json bind unbound 1         # dom0 offers one to dom1: the port as JSON
    """
    d = c.domain()
    _done(c, d, c.host.bind_unbound(d, remote_domain), count, timeout, notify_every)


@bind.command("interdomain", epilog=HELP_TAIL)
@click.argument("remote_domain", type=DOMAIN)
@click.argument("remote_port", type=PORT)
@hold_options
@domain_option
@json_option
@pass_ctx
def interdomain(c: Ctx, remote_domain, remote_port, count, timeout, notify_every):
    """Connect to REMOTE_PORT of REMOTE_DOMAIN.

    Connect to REMOTE_PORT of REMOTE_DOMAIN, which must be unbound for this domain.

    Xen sets the new local port pending, so an event sent before the bind is not lost.

    \b
    Examples:
      xenevt -d 1 bind unbound 0           # dom1 offers port 1 to dom0
      xenevt bind interdomain 1 1          # dom0 connects to it
    """
    d = c.domain()
    _done(c, d, c.host.bind_interdomain(d, remote_domain, remote_port), count, timeout, notify_every)


@bind.command("virq", epilog=HELP_TAIL)
@click.argument("virq", type=VIRQ)
@click.option("--vcpu", type=VCPU, default=0, show_default=True, help="vCPU (per-vCPU VIRQs: timer, debug, …).")
@hold_options
@domain_option
@json_option
@pass_ctx
def virq(c: Ctx, virq, vcpu, count, timeout, notify_every):
    """Bind a virtual IRQ, by its name or number.

    Bind a virtual IRQ (a name such as timer, console, debug, or its number).

    \b
    Examples:
      xenevt bind virq timer               # dom0's timer, on vCPU 0
      xenevt -d 1 bind virq debug --vcpu 1
    """
    d = c.domain()
    _done(c, d, c.host.bind_virq(d, virq, vcpu), count, timeout, notify_every)


@bind.command("ipi", epilog=HELP_TAIL)
@click.option("--vcpu", type=VCPU, default=0, show_default=True, help="vCPU the IPI is delivered to.")
@hold_options
@domain_option
@json_option
@pass_ctx
def ipi(c: Ctx, vcpu, count, timeout, notify_every):
    """Bind an inter-processor interrupt port.

    Bind an inter-processor interrupt port (a notify on it raises it on --vcpu).

    \b
    Examples:
      xenevt bind ipi --vcpu 1             # a notify on it raises it on vCPU 1
    """
    d = c.domain()
    _done(c, d, c.host.bind_ipi(d, vcpu), count, timeout, notify_every)


def register(cli: click.Group) -> None:
    cli.add_command(bind)
