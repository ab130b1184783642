"""Every numeric option and argument of every command is checked at parse time (xenevt/cli/context.py's types).

The command tree is walked, so a new option is covered as soon as it exists: each is given nan, inf, -inf, -1
and values far out of range, under a time limit (the issue's own cases in a real process too), and must end in
click's usage error (exit 2) naming the option (or argument) and the value: never a traceback, an internal
error or a hang.  An option typed with click's own INT/FLOAT/IntRange/FloatRange (which let nan through) fails
the walk by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import click
import pytest

from xenevt.cli import cli, main
from xenevt.cli.context import Pair, _IntRange, _Number

BAD = ["nan", "inf", "-inf", "-1", "1e400", "-1e400", str(10**30), "1e300"]
NUMERIC = (_IntRange, _Number, Pair)


def walk(group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()):
    yield path, group
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from walk(cmd, ctx, path + (name,))
        else:
            yield path + (name,), cmd


def _filler(param: click.Parameter) -> str:
    """A valid value for an argument that is not the one under test."""
    return param.type.choices[0] if isinstance(param.type, click.Choice) else "1"


def cases():
    out = []
    with click.Context(cli) as ctx:
        for path, cmd in walk(cli, ctx):
            for p in cmd.params:
                assert not isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)), (
                    f"{' '.join(path)} {p.name}: use a type of xenevt/cli/context.py (click's lets nan through)")
                if not isinstance(p.type, NUMERIC):
                    continue
                args = [a for a in cmd.params if isinstance(a, click.Argument)]
                for bad in BAD:
                    if isinstance(p, click.Option):
                        name = max(p.opts, key=len)
                        # (the bad option first: click checks what the command line gives in its order)
                        argv = list(path) + [f"{name}={bad}"] + [_filler(a) for a in args if a.required]
                        shown = name
                    else:
                        argv = list(path) + ["--"] + [bad if a is p else _filler(a) for a in args]
                        shown = (p.metavar or p.name.upper())
                    out.append((argv, shown, bad))
    return out


CASES = cases()


def test_the_walk_found_the_options_the_issue_named():
    found = {(" ".join(a[:a.index(next(x for x in a if x.startswith("--")))]), shown) for a, shown, _ in CASES
             if any(x.startswith("--") and "=" in x for x in a)}
    for want in [("wait", "--timeout"), ("watch", "--storm-rate"), ("watch", "--interval"), ("doctor", "--interval"),
                 ("doctor", "--storm-rate"), ("bind ipi", "--notify-every"), ("sim init", "--domains"), ("", "--as")]:
        assert want in found


class Hung(BaseException):
    """Raised by the alarm: a value let through that never returns (BaseException: main() cannot swallow it)."""


def _alarm(signum, frame):
    raise Hung


@pytest.fixture
def no_host(tmp_path, monkeypatch):
    # (no host: a value let through reaches the backend and fails otherwise than with exit 2)
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path / "host"))
    monkeypatch.setenv("XENEVT_BACKEND", "sim")
    old = signal.signal(signal.SIGALRM, _alarm)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def _check(argv, shown, value, code, out, err) -> str | None:
    if code != 2 or "Traceback" in err or err.count("\n") != 1 or shown not in err or value not in err:
        return f"{' '.join(argv)}: exit {code}: {err.strip()[-300:]}"
    return None


def test_every_numeric_option_refuses_what_is_not_a_finite_number_in_range(no_host, capfd):
    bad = []
    for argv, shown, value in CASES:
        signal.setitimer(signal.ITIMER_REAL, 10)
        try:
            code = main(["--no-pager", *argv])
        except Hung:
            bad.append(f"{' '.join(argv)}: hung")
            continue
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out, err = capfd.readouterr()
        bad.append(_check(argv, shown, value, code, out, err))
    bad = [b for b in bad if b]
    assert not bad, "\n".join(bad)


ISSUE = [["wait", "--timeout", "nan"], ["wait", "-t", "inf"], ["watch", "--storm-rate", "nan"],
         ["watch", "--interval", "inf"], ["doctor", "--interval", "nan"], ["doctor", "--storm-rate", "nan"],
         ["bind", "ipi", "--notify-every", "-inf"], ["bind", "ipi", "--timeout", "nan"]]


@pytest.mark.parametrize("argv", ISSUE, ids=" ".join)
def test_the_issues_values_in_a_real_process(tmp_path, argv):
    env = dict(os.environ, XENEVT_STATE=str(tmp_path / "host"), XENEVT_BACKEND="sim")
    p = subprocess.run([sys.executable, "-m", "xenevt", "--no-pager", *argv], capture_output=True, text=True,
                       timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert _check(argv, argv[-2], argv[-1], p.returncode, p.stdout, p.stderr) is None, p.stderr
