"""``xenevt schema``: the JSON Schema every --json output follows (xenevt/data/schema.json, in the package)."""

from __future__ import annotations

import click

from ..schema import commands
from .context import Ctx, json_option, pass_ctx


@click.command("schema")
@click.option("--command", "command", metavar="COMMAND", type=click.Choice(commands()),
              help="Only this command's output (its path, quoted: 'sim device add'), rooted at its definition.")
@json_option
@pass_ctx
def schema(c: Ctx, command):
    """Print the JSON Schema of every --json output.

    A JSON Schema (draft 2020-12): the shared objects (port, domain, queue, finding, sample, error) in $defs
    and one command-* definition per command's output.  Every document carries "schema": "xenevt/1"; additions
    keep that version, a rename or a removal makes xenevt/2.  The output is JSON with or without --json.

    \b
    Examples:
      xenevt schema > xenevt-1.schema.json
      xenevt schema --command list         # list's output alone
      xenevt --json list | python3 -m jsonschema xenevt-1.schema.json   # (jsonschema's own CLI)
    """
    import json

    from ..schema import command_schema
    from ..schema import schema as whole

    c.say(json.dumps(whole() if command is None else command_schema(command), indent=1))


def register(cli: click.Group) -> None:
    cli.add_command(schema)
