"""The man pages shipped in man/ (installed by the wheel under share/man/man1): one per command and subcommand,
each what xenevt/cli/manpage.py makes from the commands' help now (`make man` after changing a help text), each
rendered by `man -l` without a warning from groff."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from xenevt.cli import cli
from xenevt.cli.manpage import pages

MAN = Path(__file__).resolve().parent.parent / "man"
SHIPPED = sorted(p.name for p in MAN.glob("*.1"))


def test_the_shipped_pages_are_what_the_commands_make_now():
    made = pages()
    assert sorted(made) == SHIPPED, "run `make man`"
    stale = [name for name, text in made.items() if (MAN / name).read_text(encoding="utf-8") != text]
    if stale:
        import difflib

        first = "".join(list(difflib.unified_diff((MAN / stale[0]).read_text(encoding="utf-8").splitlines(True),
                                                  made[stale[0]].splitlines(True), "shipped", "made now"))[:12])
        pytest.fail(f"stale man pages (run `make man`): {stale}\n{first}")


def test_a_page_for_every_command_and_subcommand():
    names = {"xenevt.1"}

    def walk(group: click.Group, ctx: click.Context, path: tuple[str, ...]) -> None:
        for sub in group.list_commands(ctx):
            cmd = group.get_command(ctx, sub)
            names.add("-".join(("xenevt",) + path + (sub,)) + ".1")
            if isinstance(cmd, click.Group):
                walk(cmd, ctx, path + (sub,))

    with click.Context(cli) as ctx:
        walk(cli, ctx, ())
    assert names == set(SHIPPED)
    assert {"xenevt-dump.1", "xenevt-sim-init.1", "xenevt-sim-device-add.1"} <= names


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db not installed (.ci/run installs it)")
@pytest.mark.parametrize("name", SHIPPED)
def test_man_renders_each_page_without_a_warning(name):
    env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0", LC_ALL="C.UTF-8")
    r = subprocess.run(["man", "--warnings", "-l", str(MAN / name)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    title = name.removesuffix(".1")
    text = re.sub(r".\x08", "", r.stdout)  # (grotty's overstrike bold and underline, as col -b takes them out)
    assert text.startswith(title.upper() + "(1)") and "NAME" in text and "SYNOPSIS" in text, text[:300]
    assert f"{title} - " in " ".join(text.split())  # the summary line whatis/apropos read
    assert "EXAMPLES" in text and "xenevt" in text.split("EXAMPLES", 1)[1]
