"""The ``xenevt`` command line: one group, one module per family of commands.

``main()`` owns the error contract: a XenevtError becomes one line on stderr
(``xenevt: …``) and its exit code (1 failed, 2 usage); with --json the same
error is also printed as a JSON object on stdout.  No traceback reaches the
user unless --debug asks for it.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

import click

from ..errors import XenevtError
from .context import context_of, global_options

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# Each command, the module that defines it, and its line in `xenevt --help` (its docstring's first sentence: a
# test holds the two equal).  Commands are imported when run, so `--help` and each command load only what they use.
COMMANDS: dict[str, tuple[str, str]] = {
    "bind": ("bind", 'Open a port: unbound, interdomain, VIRQ or IPI.'),
    "bind-vcpu": ("ports", "Deliver PORT's future events to VCPU (EVTCHNOP_bind_vcpu)."),
    "close": ("ports", 'Close PORT (EVTCHNOP_close).'),
    "completion": ("completion", 'Print the shell completion script for bash, zsh or fish.'),
    "demo": ("demo", 'Run a guided scenario on a throw-away simulated host.'),
    "doctor": ("doctor", 'Examine event channels for stuck ports and say why.'),
    "dump": ("dump", "Show a domain's event-channel queues, bits and words."),
    "exporter": ("exporter", 'Serve event-channel metrics for Prometheus.'),
    "help": ("help", 'Print the help of xenevt or of a command, as --help does.'),
    "info": ("inspect", 'Show which backend runs and what it sees.'),
    "list": ("inspect", 'List every open port of a domain, with its state and flags.'),
    "mask": ("ports", 'Set MASKED on PORT: events stay pending, none is delivered.'),
    "notify": ("ports", 'Send an event on each PORT (EVTCHNOP_send).'),
    "set-priority": ("ports", "Set PORT's FIFO priority (0 highest, 15 lowest)."),
    "runner": ("runner", 'Run a command in dom0 of a real Xen booted under QEMU.'),
    "schema": ("schema", 'Print the JSON Schema of every --json output.'),
    "sim": ("sim", 'Create, describe and change the embedded simulated Xen host.'),
    "status": ("inspect", 'Show what Xen knows of PORT and its event word.'),
    "unmask": ("ports", 'Clear MASKED on PORT (EVTCHNOP_unmask).'),
    "wait": ("wait", "Consume events as the guest's upcall handler does."),
    "watch": ("watch", 'Watch event activity: rates, storms, stuck ports.'),
}


class SuggestingGroup(click.Group):
    """A group that answers a mistyped command with the names it is close to (difflib), as git does."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            name = args[0] if args else ""
            if ctx.resilient_parsing or not name or self.get_command(ctx, name) is not None:
                raise
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            if not close:
                raise
            said = " or ".join(repr(c) for c in close)
            # (worded as click 8.5 words it; 8.1 suggests nothing)
            raise click.UsageError(f"No such command {name!r}. Did you mean {said}?", ctx) from None


class LazyGroup(SuggestingGroup):
    """A group whose commands are imported on first use, and whose --help lists them from COMMANDS."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(f".{COMMANDS[name][0]}", __package__).register(self)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(n) for n in COMMANDS)
        short = click.utils.make_default_short_help  # (click 8.5 serves it deprecated, untyped; 8.1 has no other)
        rows = [(name, short(COMMANDS[name][1], limit)) for name in sorted(COMMANDS)]  # type: ignore[operator]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@global_options
@click.version_option(package_name="xenevt", prog_name="xenevt")
@click.pass_context
def cli(ctx: click.Context):
    """Drive and inspect Xen event channels (FIFO and 2-level ABIs), on Xen or on the embedded simulator.

    \b
    Examples:
      xenevt list              # dom0's ports (no Xen here: a simulated host's)
      xenevt -d 1 list --json  # dom1's, as JSON
      xenevt help status       # a command's help, as: xenevt status --help
    """
    ctx.call_on_close(context_of(ctx).close)



# click 8.2 raises NoArgsIsHelpError for a group called bare; 8.1 (Debian 12) prints the help and exits 0 itself
_NO_ARGS_IS_HELP: tuple[type[click.UsageError], ...] = tuple(
    c for c in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if c is not None)


def _json_wanted(argv: list[str]) -> bool:
    return "--json" in argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    complete = os.environ.get("_XENEVT_COMPLETE")
    if complete:  # the shell asks for completions (cli/completion.py): click's hook, before our own parsing
        from .completion import run_hook

        return run_hook(cli, complete)
    debug = "--debug" in argv
    code = EXIT_OK
    try:
        # make_context + invoke rather than cli.main: click's main handles EPIPE and ^C itself, differently
        # across versions (8.1 exits 1 on a closed pipe), and the error contract is ours
        with cli.make_context("xenevt", list(argv)) as ctx:
            rv = cli.invoke(ctx)
        if isinstance(rv, int):
            code = rv
    except click.exceptions.Exit as e:
        code = e.exit_code
    except _NO_ARGS_IS_HELP as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        code = EXIT_OK
    except click.UsageError as e:
        where = f"{e.ctx.command_path.removeprefix('xenevt').strip()}: " if e.ctx and e.ctx.parent else ""
        code = _report(f"{where}{e.format_message()}", EXIT_USAGE, {"error": e.format_message(), "type": "UsageError"},
                       argv)
    except click.ClickException as e:
        code = _report(e.format_message(), e.exit_code or EXIT_FAILED,
                       {"error": e.format_message(), "type": "ClickException"}, argv)
    except click.Abort:
        code = 130
    except KeyboardInterrupt:
        code = 130
    except XenevtError as e:
        if debug:
            raise
        from ..errors import with_errno_name

        e = with_errno_name(e)
        code = _report(str(e), e.exit_code, e.as_dict(), argv)
    except BrokenPipeError:
        # the reader went away (`xenevt list | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_OK
    except OSError as e:
        if debug:
            raise
        import errno

        name = errno.errorcode.get(e.errno or 0, "")
        code = _report(f"{e.strerror or e}{': ' + e.filename if e.filename else ''} ({name})", EXIT_FAILED,
                       {"error": str(e), "type": type(e).__name__, "errno": name}, argv)
    except Exception as e:  # a bug of ours: still one line, and how to see more
        if debug:
            raise
        code = _report(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", EXIT_FAILED,
                       {"error": f"{type(e).__name__}: {e}", "type": "InternalError"}, argv)
    return code


def _report(message: str, code: int, obj: dict, argv: list[str]) -> int:
    from ..safetext import term

    line = term(" ".join(message.split()))  # a message may quote a file's bytes, a path, a xenstore value
    try:
        if _json_wanted(argv):
            import json

            from ..schema import VERSION

            sys.stdout.write(json.dumps({"schema": VERSION} | obj | {"exit_code": code}) + "\n")
            sys.stdout.flush()
        sys.stderr.write(f"xenevt: {line}\n")
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    return code


def finish(code: int) -> None:
    """Exit with ``code`` once the command is done; a Ctrl-C from here on exits 130 without a word (what the
    command wrote is flushed first)."""
    import _signal  # (the C module: no enums to build while a Ctrl-C may land)

    late: list[int] = []
    try:  # a Ctrl-C before the handler is in place raises here once, and is caught: no traceback
        _signal.signal(_signal.SIGINT, lambda signum, frame: late.append(signum))
    except KeyboardInterrupt:
        late.append(_signal.SIGINT)
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except (BrokenPipeError, ValueError):
        pass
    _signal.signal(_signal.SIGINT, lambda signum, frame: os._exit(130))
    if late:
        code = 130
    # the interpreter's last collection at exit walks every object the command imported and made (some 5 ms of a
    # 70 ms `list`); frozen, they are left to the OS, which takes the whole process back anyway
    gc.freeze()
    sys.exit(code)
