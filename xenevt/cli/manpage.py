"""Man pages from the click commands themselves: one page for xenevt and one per command and subcommand
(xenevt-sim-init.1), in roff for man(7), from the same help text `--help` prints.

The pages are generated into man/ of the checkout (``make man``, i.e. ``python -m xenevt.cli.manpage man``)
and shipped as they are: the wheel installs them under share/man/man1.  Built at build time instead, the
build would have to import the package and click (build isolation has neither); a test holds the shipped pages
equal to what this module makes now, so a changed help text fails until the pages are made again.
"""

from __future__ import annotations

import inspect
import os
import sys

import click

SECTION = "1"
_MARK = "\b"  # click's "keep this paragraph as written" marker


def esc(text: str) -> str:
    """Text for roff: backslashes and hyphens escaped, a line that starts with a control character guarded."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _paragraphs(text: str) -> list[tuple[bool, str]]:
    """The help text's paragraphs, each (kept as written?, text)."""
    out = []
    for para in text.strip().split("\n\n"):
        kept = para.startswith(_MARK)
        out.append((kept, para.removeprefix(_MARK).strip("\n") if kept else " ".join(para.split())))
    return out


def _body(cmd: click.Command) -> tuple[str, list[str]]:
    """The command's description (its help but the summary) and its example lines."""
    paras = _paragraphs(inspect.cleandoc(cmd.help or ""))  # (click keeps a docstring's indent until it formats)
    desc, examples = [], []
    for kept, text in paras[1:]:
        if kept and text.startswith("Examples:"):
            examples = [line.strip() for line in text.split("\n")[1:] if line.strip()]
        else:
            desc.append(".nf\n" + esc(text) + "\n.fi" if kept else esc(text))
    if cmd.epilog:
        desc.append(esc(" ".join(cmd.epilog.split())))
    return "\n.PP\n".join(desc), examples


def title(path: tuple[str, ...]) -> str:
    return "-".join(("xenevt",) + path)


def page_name(path: tuple[str, ...]) -> str:
    return f"{title(path)}.{SECTION}"


def page(cmd: click.Command, ctx: click.Context, path: tuple[str, ...], version: str) -> str:
    name = title(path)
    summary = cmd.get_short_help_str(limit=10**6)
    lines = [f'.TH {name.upper()} {SECTION} "" "xenevt {version}" "xenevt manual"',
             ".SH NAME", f"{esc(name)} \\- {esc(summary)}",
             ".SH SYNOPSIS", f".B {esc(ctx.command_path)}", esc(" ".join(cmd.collect_usage_pieces(ctx)))]
    desc, examples = _body(cmd)
    lines += [".SH DESCRIPTION", desc or esc(summary)]  # (a description says the summary again, at length)
    if isinstance(cmd, click.Group):
        lines.append(".SH COMMANDS")
        for sub in cmd.list_commands(ctx):
            c = cmd.get_command(ctx, sub)
            if c is None or c.hidden:
                continue
            lines += [".TP", f"\\fB{esc(sub)}\\fR", f"{esc(c.get_short_help_str(limit=10**6))} See",
                      f"\\fB{esc(title(path + (sub,)))}\\fR({SECTION})."]
    # the command's own options, then its help option as this context names it (-h, --help): not the one click
    # made and kept on the command the first time any context asked, which may have named --help alone
    options = [rec for p in cmd.params
               if isinstance(p, click.Option) and (rec := p.get_help_record(ctx)) is not None]
    if cmd.add_help_option and ctx.help_option_names:
        options.append((", ".join(ctx.help_option_names), "Show this message and exit."))
    if options:
        lines.append(".SH OPTIONS")
        for opts, text in options:
            lines += [".TP", f"\\fB{esc(opts)}\\fR", esc(" ".join(text.split())) or "\\&"]
    if examples:
        lines += [".SH EXAMPLES", ".nf", ".RS 4"] + [esc(e) for e in examples] + [".RE", ".fi"]
    see = [title(path[:i]) for i in range(len(path))]
    if path:
        lines += [".SH SEE ALSO", ",\n".join(f"\\fB{esc(s)}\\fR({SECTION})" for s in see)]
    return "\n".join(lines) + "\n"


def pages(root: click.Group | None = None) -> dict[str, str]:
    """Every page, by file name (xenevt.1, xenevt-list.1, xenevt-sim-init.1, …)."""
    from .. import __version__
    from . import cli

    root = root or cli
    ver = __version__  # (the package's own: an installed distribution's metadata may be another checkout's)
    out: dict[str, str] = {}

    def walk(cmd: click.Command, ctx: click.Context, path: tuple[str, ...]) -> None:
        if cmd.hidden:
            return
        out[page_name(path)] = page(cmd, ctx, path, ver)
        if isinstance(cmd, click.Group):
            for sub in cmd.list_commands(ctx):
                c = cmd.get_command(ctx, sub)
                if c is not None:
                    walk(c, click.Context(c, info_name=sub, parent=ctx), path + (sub,))

    with click.Context(root, info_name="xenevt", **root.context_settings) as ctx:  # (-h as well as --help)
        walk(root, ctx, ())
    return out


def write(folder: str) -> list[str]:
    """Write every page into ``folder`` (made if missing), removing pages of commands that are gone."""
    os.makedirs(folder, exist_ok=True)
    made = pages()
    for old in os.listdir(folder):
        if old.endswith("." + SECTION) and old not in made:
            os.unlink(os.path.join(folder, old))
    for name, text in made.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(text)
    return sorted(made)


if __name__ == "__main__":
    print(f"{len(write(sys.argv[1] if len(sys.argv) > 1 else 'man'))} man pages written")
