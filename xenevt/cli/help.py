"""``xenevt help [COMMAND]...``: the help of a command, the same text its ``--help`` prints."""

from __future__ import annotations

import click

from .context import Ctx, pass_ctx


@click.command("help")
@click.argument("names", nargs=-1, metavar="[COMMAND]...")
@pass_ctx
def help_command(c: Ctx, names: tuple[str, ...]) -> None:
    """Print the help of xenevt or of a command, as --help does.

    COMMAND may be a group's subcommand too (`xenevt help sim init`).

    \b
    Examples:
      xenevt help                  # the commands
      xenevt help list             # the same as: xenevt list --help
      xenevt help sim init         # a subcommand's
    """
    ctx = click.get_current_context()
    here = ctx.find_root()
    for name in names:
        group = here.command
        if not isinstance(group, click.Group):
            raise click.UsageError(f"{here.command_path!r} has no subcommand {name!r}", ctx)
        _, cmd, _ = group.resolve_command(here, [name])  # (a mistyped name: "No such command", with suggestions)
        assert cmd is not None  # (resolve_command raises rather than answer None outside resilient parsing)
        here = click.Context(cmd, info_name=cmd.name, parent=here)
    click.echo(here.get_help())


def register(cli: click.Group) -> None:
    cli.add_command(help_command)
