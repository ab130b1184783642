"""The ``xenevt`` command line: one group, one module per family of commands.

``main()`` owns the error contract: a XenevtError becomes one line on stderr
(``xenevt: …``) and its exit code (1 failed, 2 usage); with --json the same
error is also printed as a JSON object on stdout.  No traceback reaches the
user unless --debug asks for it.
"""

from __future__ import annotations

import errno
import json
import os
import sys

import click

from ..errors import XenevtError
from .context import DOMAIN, Ctx

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--backend", "-b", type=click.Choice(["auto", "sim", "xen"]), default="auto", show_default=True,
              envvar="XENEVT_BACKEND", help="auto: real Xen where /dev/xen/evtchn exists, else the simulator.")
@click.option("--state", metavar="DIR", default=None,
              help="Simulator state directory (default $XENEVT_STATE, $XDG_RUNTIME_DIR/xenevt, ~/.local/state/xenevt).")
@click.option("--domain", "-d", type=DOMAIN, default=None, help="Domain to act on (default 0).")
@click.option("--as", "caller", type=DOMAIN, default=None, metavar="DOMAIN",
              help="Simulator: the domain making the calls (default: the domain itself; dom0 is privileged).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (errors too, as an object on stdout).")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.version_option(package_name="xenevt", prog_name="xenevt")
@click.pass_context
def cli(ctx: click.Context, backend, state, domain, caller, as_json, debug):
    """Drive and inspect Xen event channels (FIFO ABI), on Xen or on the embedded simulator."""
    ctx.obj = Ctx(backend, state, domain, caller, as_json, debug)
    ctx.call_on_close(ctx.obj.close)


from . import bind, demo, doctor, dump, inspect, ports, sim, wait, watch  # noqa: E402  (commands register on `cli`)

for _module in (sim, bind, ports, inspect, wait, dump, doctor, watch, demo):
    _module.register(cli)


# click 8.2 raises NoArgsIsHelpError for a group called bare; 8.1 (Debian 12) prints the help and exits 0 itself
_NO_ARGS_IS_HELP: tuple[type[BaseException], ...] = tuple(
    c for c in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if c is not None)


def _json_wanted(argv: list[str]) -> bool:
    return "--json" in argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
        code = _report(e.format_message(), e.exit_code or EXIT_FAILED, {"error": e.format_message()}, argv)
    except click.Abort:
        code = 130
    except KeyboardInterrupt:
        code = 130
    except XenevtError as e:
        if debug:
            raise
        code = _report(str(e), e.exit_code, e.as_dict(), argv)
    except BrokenPipeError:
        # the reader went away (`xenevt list | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_OK
    except OSError as e:
        if debug:
            raise
        name = errno.errorcode.get(e.errno or 0, "")
        code = _report(f"{e.strerror or e}{': ' + e.filename if e.filename else ''} ({name})", EXIT_FAILED,
                       {"error": str(e), "errno": name}, argv)
    except Exception as e:  # a bug of ours: still one line, and how to see more
        if debug:
            raise
        code = _report(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", EXIT_FAILED,
                       {"error": f"{type(e).__name__}: {e}", "type": "InternalError"}, argv)
    return code


def _report(message: str, code: int, obj: dict, argv: list[str]) -> int:
    line = " ".join(message.split())
    try:
        if _json_wanted(argv):
            sys.stdout.write(json.dumps(obj | {"exit_code": code}) + "\n")
            sys.stdout.flush()
        sys.stderr.write(f"xenevt: {line}\n")
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
