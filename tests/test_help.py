"""Every command's help, walked over the command tree (a new command is covered as soon as it exists): a one-line
summary that is a sentence and is shown whole, examples that run as written on a fresh simulated host, one-token
metavars, `xenevt help X` the same as `X --help`; and the usage contract: "did you mean", exit 2, errno names."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys

import click
import pytest

from xenevt.cli import COMMANDS, cli, main

SKIP_MARK = re.compile(r"#\s*(on Xen|your )")  # an example shown but not run here (real Xen, the reader's program)


def walk(group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        yield path + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, ctx, path + (name,))


with click.Context(cli) as _ctx:
    TREE = list(walk(cli, _ctx))
IDS = [" ".join(p) for p, _ in TREE]


def examples(cmd: click.Command) -> list[str]:
    """The lines of the command's "Examples:" section (its help text), each a shell command line."""
    text = inspect.cleandoc(cmd.help or "")
    _, found, rest = text.partition("Examples:\n")
    assert found, "no Examples: section"
    lines = []
    for line in rest.splitlines():
        if not line.startswith("  ") or not line.strip():
            break
        lines.append(line.strip())
    return lines


@pytest.mark.parametrize(("path", "cmd"), TREE, ids=IDS)
def test_summary_is_one_whole_sentence(path, cmd):
    short = cmd.get_short_help_str(limit=10**6)
    assert re.fullmatch(r"[A-Z][^\n]*[.]", short), short
    assert short.count(". ") == 0, f"{short!r}: more than one sentence"
    # shown whole (not cut with "...") in its group's list on an 80-column terminal
    siblings = [p[-1] for p, _ in TREE if p[:-1] == path[:-1]]
    limit = 80 - 2 - 6 - max(len(n) for n in siblings)
    assert len(short) <= limit, f"{short!r}: {len(short)} characters, the list shows {limit}"
    if len(path) == 1:
        assert COMMANDS[path[0]][1] == short  # what `xenevt --help` lists without importing the command


@pytest.mark.parametrize(("path", "cmd"), TREE, ids=IDS)
def test_every_option_has_a_one_token_metavar(path, cmd):
    with click.Context(cmd, info_name=path[-1]) as ctx:
        for p in cmd.get_params(ctx):
            if isinstance(p, click.Option) and p.is_flag:
                continue
            mv = p.make_metavar(ctx) if _takes_ctx(p) else p.make_metavar()  # type: ignore[call-arg]
            assert " " not in mv.rstrip(".").replace("...", ""), f"{' '.join(path)} {p.opts}: metavar {mv!r}"


def _takes_ctx(p: click.Parameter) -> bool:
    import inspect

    return "ctx" in inspect.signature(p.make_metavar).parameters


@pytest.mark.parametrize(("path", "cmd"), TREE, ids=IDS)
def test_help_command_prints_what_help_option_does(path, cmd, capsys):
    assert main(["help", *path]) == 0
    via_help = capsys.readouterr().out
    assert main([*path, "--help"]) == 0
    assert capsys.readouterr().out == via_help
    assert "Examples:" in via_help


def test_help_of_xenevt_and_mistakes(capsys):
    assert main(["help"]) == 0
    top = capsys.readouterr().out
    assert main(["--help"]) == 0 and capsys.readouterr().out == top
    assert main(["help", "lsit"]) == 2
    assert capsys.readouterr().err == "xenevt: No such command 'lsit'. Did you mean 'list'?\n"
    assert main(["help", "list", "extra"]) == 2
    assert "has no subcommand 'extra'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "said"), [
    (["lsit"], "xenevt: No such command 'lsit'. Did you mean 'list'?\n"),
    (["stauts", "1"], "xenevt: No such command 'stauts'. Did you mean 'status'?\n"),
    (["sim", "inti"], "xenevt: sim: No such command 'inti'. Did you mean 'init'?\n"),
    (["bind", "unbond", "0"], "xenevt: bind: No such command 'unbond'. Did you mean 'unbound'?\n"),
    (["sim", "device", "lst"], "xenevt: sim device: No such command 'lst'. Did you mean 'list'?\n"),
])
def test_a_mistyped_command_is_answered_with_the_close_ones(argv, said, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path))
    assert main(argv) == 2
    assert capsys.readouterr().err == said


def test_a_name_close_to_nothing_gets_no_suggestion(capsys):
    assert main(["zzzzzz"]) == 2
    assert capsys.readouterr().err == "xenevt: No such command 'zzzzzz'.\n"


def test_the_issues_usage_errors_exit_2(tmp_path, monkeypatch, capsys):
    state = str(tmp_path / "s")
    monkeypatch.setenv("XENEVT_STATE", state)
    assert main(["sim", "init"]) == 0
    capsys.readouterr()
    assert main(["sim", "device", "add", "vif", "1", "--backend", "1"]) == 2
    assert capsys.readouterr().err == "xenevt: domain 1 cannot be its own vif's backend\n"
    assert main(["sim", "init", "--force", "--domain-abi", "5=2l"]) == 2
    assert capsys.readouterr().err == "xenevt: no domain 5 to give the 2l ABI (the host has domains 0..1)\n"


def test_an_os_error_names_its_errno(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path / "s"))
    assert main(["sim", "init"]) == 0
    capsys.readouterr()
    raw = str(tmp_path / "nonexistent" / "dir" / "x.raw")
    assert main(["dump", "--raw", raw]) == 1
    assert capsys.readouterr().err == f"xenevt: cannot write dump file {raw}: No such file or directory (ENOENT)\n"
    assert main(["--json", "dump", "--raw", raw]) == 1
    assert '"errno": "ENOENT"' in capsys.readouterr().out
    assert main(["doctor", "--edump", str(tmp_path)]) == 1  # (a directory: said in words, no errno to add)
    assert "(E" not in capsys.readouterr().err


def test_with_errno_name_adds_the_name_once_where_the_os_words_are_quoted():
    from xenevt.errors import StateError, with_errno_name

    def raised(message: str, err: OSError) -> StateError:
        try:
            try:
                raise err
            except OSError:
                raise StateError(message) from None
        except StateError as e:
            return e

    e = with_errno_name(raised("cannot open f: permission denied", PermissionError(13, "Permission denied")))
    assert str(e) == "cannot open f: permission denied (EACCES)" and e.errno == 13
    e = with_errno_name(raised("cannot open f: permission denied (EACCES)", PermissionError(13, "Permission denied")))
    assert str(e) == "cannot open f: permission denied (EACCES)"
    e = with_errno_name(raised("no host at f: run `xenevt sim init` first", FileNotFoundError(2, "No such file")))
    assert str(e) == "no host at f: run `xenevt sim init` first" and e.errno is None


EXAMPLE_CMDS = [(p, c) for p, c in TREE]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "cmd"), EXAMPLE_CMDS, ids=IDS)
def test_every_example_runs_on_a_fresh_host(path, cmd, tmp_path):
    """Each example line, as written, in bash, in order, on a fresh simulated host (its own state, its own
    cwd): exit 0.  Lines marked as needing real Xen or the reader's own program are shown, not run."""
    run_examples(examples(cmd), tmp_path)


def run_examples(lines: list[str], tmp_path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "xenevt").write_text(f"#!/bin/sh\nexec {sys.executable} -m xenevt \"$@\"\n")
    (bindir / "xenevt").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XENEVT_")}
    env.update(PATH=f"{bindir}:{env['PATH']}", HOME=str(home), XDG_RUNTIME_DIR=str(tmp_path / "run"),
               XENEVT_BACKEND="sim", XENEVT_STATE=str(tmp_path / "state"), COLUMNS="100")
    subprocess.run([sys.executable, "-m", "xenevt", "sim", "init"], env=env, check=True, capture_output=True)
    ran = 0
    for line in lines:
        if SKIP_MARK.search(line):
            continue
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", line], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"{line}: exit {r.returncode}: {r.stderr.strip()[-400:]}"
        assert "Traceback" not in r.stderr
        ran += 1
    assert ran, "no example runs on the simulator"
