"""``xenevt wait``: act as the guest and print each event delivered to a vCPU."""

from __future__ import annotations

import signal
from contextlib import contextmanager

import click

from ..errors import ChannelError
from .context import COUNT, TIMEOUT, VCPU, Ctx, consume_events, domain_option, json_option, pass_ctx


@click.command("wait")
@click.option("--vcpu", type=VCPU, default=0, show_default=True, help="vCPU whose events to consume.")
@click.option("--count", "-n", type=COUNT, default=None, help="Stop after N events (fail if the timeout comes first).")
@click.option("--timeout", "-t", type=TIMEOUT, default=None,
              help="Stop after S seconds (default: run until Ctrl-C or --count).")
@domain_option
@json_option
@pass_ctx
def wait(c: Ctx, vcpu, count, timeout):
    """Consume events as the guest's upcall handler does.

    Consume events as the guest's upcall handler does (FIFO: highest priority first; 2-level:
    Linux's round-robin scan of the bitmaps) and print each delivered port, one per line.
    Sleeps between events; one consumer per vCPU.

    \b
    Examples:
      xenevt bind ipi                      # dom0's port 1
      xenevt notify 1                      # raised on it
      xenevt wait -n 1 -t 5                # prints: domain 0 vCPU 0: event on port 1
    """
    d = c.domain()
    with _ended_by_signals():
        got, stopped = consume_events(c, d, vcpu, count, timeout)
    if stopped:  # Ctrl-C: what came is printed, and the exit says it was interrupted (128 + SIGINT)
        c.note(f"xenevt: stopped after {got} event(s)")
        raise click.exceptions.Exit(130)
    if count is not None and got < count:
        raise ChannelError(f"timed out after {timeout:g} s with {got} of {count} event(s) on vCPU {vcpu} of domain {d}",
                           domain=d, vcpu=vcpu, call="wait")


class _Ended(BaseException):
    """SIGTERM or SIGHUP, raised where the consumer is, so it unwinds as Ctrl-C does and gives its vCPU back."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _end(signum, frame):
    raise _Ended(signum)


@contextmanager
def _ended_by_signals():
    """SIGTERM and SIGHUP end the wait by unwinding (the host closed, its consumer released): exit 128 + N."""
    ends = (signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, _end) for s in ends}
    try:
        yield
    except _Ended as e:
        raise click.exceptions.Exit(128 + e.signum) from None
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def register(cli: click.Group) -> None:
    cli.add_command(wait)
