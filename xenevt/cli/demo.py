"""``xenevt demo``: the guided scenario on a fresh, throw-away simulated host."""

from __future__ import annotations

import click

from ..sim import demo as scenario
from .context import Ctx, pass_ctx


@click.command("demo")
@pass_ctx
def demo(c: Ctx):
    """Run a guided scenario on a throw-away simulated host.

    Two domains, an interdomain channel, events at two priorities, a masked port and a consumer:
    each step says what Xen did and shows the queues.  Leaves your own host untouched.

    \b
    Examples:
      xenevt demo
    """
    scenario.run(c.out)


def register(cli: click.Group) -> None:
    cli.add_command(demo)
