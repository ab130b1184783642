"""The version of xenevt's JSON vocabulary, and its JSON Schema (xenevt/data/schema.json, shipped in the wheel).

Every document a command prints with --json (and every line of a stream) carries ``"schema": VERSION`` first.
Additions keep the version; a rename or a removal makes the next one (xenevt/2).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

VERSION = "xenevt/1"
TAG = f'"schema": "{VERSION}"'  # (the first field of a document written as text: list's and dump's streams)


@cache
def _text() -> str:
    from importlib.resources import files

    return files("xenevt").joinpath("data", "schema.json").read_text(encoding="utf-8")


def schema() -> dict[str, Any]:
    """The whole JSON Schema (draft 2020-12): ``$defs`` for the shared objects and one ``command-*`` per output."""
    return json.loads(_text())


def commands() -> list[str]:
    """The commands whose output the schema describes, as their command path (``sim device add``)."""
    return sorted(_command_defs())


def _command_defs() -> dict[str, str]:
    return {d["x-command"]: name for name, d in schema()["$defs"].items() if "x-command" in d}


def command_schema(command: str) -> dict[str, Any]:
    """The schema of one command's output (its lines, for a stream): the whole ``$defs``, rooted at its own."""
    defs = _command_defs()
    if command not in defs:
        raise KeyError(command)
    whole = schema()
    return {"$schema": whole["$schema"], "$id": whole["$id"], "title": f"xenevt {command} --json",
            "$ref": f"#/$defs/{defs[command]}", "$defs": whole["$defs"]}
