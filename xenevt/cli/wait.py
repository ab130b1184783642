"""``xenevt wait``: act as the guest and print each event delivered to a vCPU."""

from __future__ import annotations

import json
import time

import click

from ..errors import ChannelError
from .context import COUNT, VCPU, Ctx, domain_option, json_option, pass_ctx


@click.command("wait")
@click.option("--vcpu", type=VCPU, default=0, show_default=True, help="vCPU whose queues to consume.")
@click.option("--count", "-n", type=COUNT, default=None, help="Stop after N events (fail if the timeout comes first).")
@click.option("--timeout", "-t", type=click.FloatRange(min=0), default=None,
              help="Stop after S seconds (default: run until Ctrl-C or --count).")
@domain_option
@json_option
@pass_ctx
def wait(c: Ctx, vcpu, count, timeout, local_domain):
    """Consume events as the guest's upcall handler does (highest priority first) and print
    each delivered port, one per line.  Sleeps between events; one consumer per vCPU."""
    d = c.domain(local_domain)
    b = c.backend()
    deadline = None if timeout is None else time.monotonic() + timeout
    got = 0
    try:
        while count is None or got < count:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ports = b.consume(d, vcpu, 256 if count is None else min(256, count - got), left)
            for port in ports:
                got += 1
                if c.json:
                    c.out.file.write(json.dumps({"domain": d, "vcpu": vcpu, "port": port, "time": time.time()}) + "\n")
                    c.out.file.flush()
                else:
                    c.out.print(f"domain {d} vCPU {vcpu}: event on port {port}")
            if not ports and deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        c.err.print(f"xenevt: stopped after {got} event(s)")
        return
    if count is not None and got < count:
        raise ChannelError(f"timed out after {timeout:g} s with {got} of {count} event(s) on vCPU {vcpu} of domain {d}",
                           domain=d, vcpu=vcpu, call="wait")


def register(cli: click.Group) -> None:
    cli.add_command(wait)
