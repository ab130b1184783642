"""What every command shares: the chosen backend, output, and argument types.

Commands never pick a backend themselves: they ask the context, which asks
``select_backend`` once with the global options (and never the simulator
directly: creating the default host is the backend layer's job too).  Commands that only inspect
say so, and the simulator then opens its state read-only.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .params import (  # noqa: F401  (re-exported: commands take their types from the context module)
    _NAME,
    CB_OFFSET,
    COLLECT_INTERVAL,
    COLLECT_TIMEOUT,
    COUNT,
    DOM0_NAME,
    DOMAIN,
    DOMAIN_ID,
    DOMAINS,
    DURATION,
    GFN,
    KASLR_OFFSET,
    MAX_PORTS,
    PING_INTERVAL,
    PORT,
    PRIORITY,
    QUEUES,
    RATE,
    REQUESTS,
    RUNNER_DOMUS,
    RUNNER_TIMEOUT,
    SAMPLE_INTERVAL,
    SIM_VCPU,
    TIMEOUT,
    TOP,
    VCPU,
    VCPUS,
    VIRQ,
    WATCH_INTERVAL,
    YEAR,
    DomainName,
    Pair,
    _Domain,
    _IntRange,
    _Number,
    _Virq,
)

if TYPE_CHECKING:
    from rich.console import Console

    from .._front.host import Host
    from ..dump.text import TextOut
    from .pager import Paged


class Ctx:
    """What the global options say (before or after the command: ``note`` records each), the host they name,
    and the output.  The domain rule lives here (``domain``, ``domains``, ``enter``), nowhere else."""

    def __init__(self) -> None:
        self._given: dict[str, Any] = {}    # option name -> value, as given (either position)
        self.domains_given: list[int | DomainName] = []  # every -d, in order, from both positions
        self.all_domains = False
        self.arity = NONE                   # what the running command does with a domain (pass_ctx says)
        self.command = "xenevt"
        self._paged: Paged | None = None
        self._text: TextOut | None = None
        self._out: Console | None = None
        self._err: Console | None = None
        self._host: Host | None = None
        self._caller: int | None = None
        self._names_host: Host | None = None

    # --- the global options: each recorded once, from whichever position gave it
    def note_option(self, name: str, value: Any, shown: str) -> None:
        """One global option as the command line gave it; the same option in both positions must agree."""
        if name == "domain":
            self.domains_given += list(value)
            return
        if name == "all_domains":
            self.all_domains = True
            return
        was = self._given.get(name)
        if was is not None and was != value and not isinstance(value, bool):
            raise click.UsageError(f"{shown} given twice, as {was} and {value}: give it once")
        self._given[name] = value

    @property
    def backend_name(self) -> str:
        return self._given.get("backend") or os.environ.get("XENEVT_BACKEND") or "auto"

    @property
    def state_given(self) -> bool:
        return self._given.get("state") is not None or bool(os.environ.get("XENEVT_STATE"))

    @property
    def state(self) -> str:
        given = self._given.get("state")
        if given is not None:
            return given
        from .._front.host import default_state_dir  # (here, not at import: `xenevt --help` needs no backend)

        return default_state_dir()

    @property
    def json(self) -> bool:
        return bool(self._given.get("json"))

    @json.setter
    def json(self, on: bool) -> None:
        self._given["json"] = on

    @property
    def debug(self) -> bool:
        return bool(self._given.get("debug"))

    @property
    def pager(self) -> bool:
        return not self._given.get("no_pager")

    @property
    def caller(self) -> int | None:
        """--as, resolved (a name through the host)."""
        given = self._given.get("caller")
        if given is None:
            return None
        if self._caller is None:
            self._caller = self.resolve(given)
        return self._caller

    # --- the domain rule: one place for every command
    def enter(self, command: str, arity: str, prints_json: bool = True) -> None:
        """The command about to run, and what it does with domains: NONE refuses -d (an option a command
        cannot honour is an error), ONE takes one, MANY several (and --all-domains); one that prints no JSON
        (no json_option) refuses --json likewise."""
        self.command, self.arity = command, arity
        if arity == NONE and self.domains_given:
            raise click.UsageError(f"it acts on no domain, so it takes no -d/--domain (given: "
                                   f"{', '.join(map(str, self.domains_given))})")
        if self.json and not prints_json:
            raise click.UsageError("it prints no JSON, so it takes no --json")

    def resolve(self, value: int | DomainName) -> int:
        """A domain's id from its id or its name (dom0 is ``Domain-0`` as xl calls it; other names are the
        host's: xenstore's /local/domain/N/name, which the simulator writes too)."""
        if not isinstance(value, DomainName):
            return value
        if value == DOM0_NAME:
            return 0
        from ..errors import UsageError

        try:
            return self._lookup().domain_by_name(str(value))
        except UsageError as e:
            raise click.UsageError(f"{value.shown}: {e}") from None

    def _named(self, extra: tuple[int | DomainName | None, ...] = ()) -> list[int]:
        out: list[int] = []
        for v in [*self.domains_given, *(x for x in extra if x is not None)]:
            d = self.resolve(v)
            if d not in out:
                out.append(d)
        return out

    def domain(self, *extra: int | DomainName | None) -> int:
        """The one domain a command acts on: -d (either position) or a DOMID argument (``extra``; both must
        agree), else --as's (a domain acts on itself), else dom0."""
        named = self._named(extra)
        if len(named) > 1:
            raise click.UsageError(f"it acts on one domain, and {' and '.join(f'domain {d}' for d in named)} "
                                   "were named")
        if named:
            return named[0]
        return 0 if self.caller is None else self.caller

    def confirm(self, what: str, yes: bool) -> None:
        """Ask before a change that touches more than the domain named (``--yes`` answers for a script);
        without a terminal to ask on, a usage error saying --yes is needed."""
        if yes:
            return
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise click.UsageError(f"this would {what}: add --yes to confirm (no terminal to ask on)")
        if not click.confirm(f"xenevt: {what}?", default=False, err=True):
            raise click.exceptions.Exit(1)

    def domains(self, default: tuple[int, ...] | None = (0,)) -> list[int]:
        """The domains a command that reads several reads: every -d (either position), or --all-domains, else
        --as's, else ``default`` (None: every domain of the host)."""
        named = self._named()
        if named and self.all_domains:
            raise click.UsageError("give -d/--domain or --all-domains, not both")
        if named:
            return named
        if self.all_domains:
            return self.host.domains()
        if self.caller is not None:
            return [self.caller]
        return self.host.domains() if default is None else list(default)

    # --- output: plain text for the text views, rich only where a command draws with it (info, watch, demo)
    @property
    def stdout(self):
        """Where stdout's text goes: the pager's input once ``page()`` started one, else sys.stdout."""
        return self._paged if self._paged is not None else sys.stdout

    @property
    def text(self):
        """A TextOut (dump.render) over stdout: lines, styled where a terminal shows colour."""
        if self._text is None:
            from ..dump.text import TextOut, color_wanted

            self._text = TextOut(self.stdout, color_wanted(sys.stdout))
        return self._text

    @property
    def out(self):
        """A rich Console over stdout, made on first use (only the commands that draw tables or live views)."""
        if self._out is None:
            from rich.console import Console

            kw: dict[str, Any] = {}
            if self._paged is not None:  # the pager shows colours (less -R) and has the terminal's width
                kw = {"force_terminal": self.text.color, "width": self._paged.cols}
            self._out = Console(file=self.stdout, markup=False, highlight=False, soft_wrap=True, **kw)
            self._out.on_broken_pipe = _reader_left  # type: ignore[method-assign]  # (rich: replaced per console); `xenevt list | head` stops quietly
        return self._out

    @property
    def err(self):
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
        return self._err

    def say(self, line: str = "") -> None:
        """One plain line on stdout."""
        self.stdout.write(line + "\n")

    def note(self, line: str) -> None:
        """One line on stderr (notes, warnings: never into the pager); outside text in it escaped (safetext)."""
        from ..safetext import term  # (here: --help and a quiet command never load it)

        sys.stderr.write(term(line) + "\n")
        sys.stderr.flush()

    def stdout_is_terminal(self) -> bool:
        try:
            return sys.stdout.isatty()
        except ValueError:
            return False

    def page(self) -> None:
        """A text view where a person reads: from here stdout goes through the pager (pager.py) once it is
        longer than the terminal.  Not for --json, not without a terminal, not with --no-pager."""
        if self.json or not self.pager or self._paged is not None or not self.stdout_is_terminal():
            return
        from .pager import maybe_page

        self._paged = maybe_page(sys.stdout)
        self._text = self._out = None  # made again over the pager

    def table(self, header: tuple[str, ...], rows, right: tuple[str, ...] = ()) -> None:
        """Print rows as they come (dump.render.stream_table), not one table built in memory."""
        from ..dump.text import stream_table

        out = self.stdout
        stream_table(out.write, header, rows, right)
        out.flush()

    @property
    def host(self):
        """The host the global options name (xenevt.open: the backend chosen once, opened on first use)."""
        if self._host is None:
            from .. import open as open_host

            # on a laptop with no Xen and no host yet, the default location gets one (said on stderr)
            self._host = open_host(self.backend_name, self.state, self.caller, create=not self.state_given,
                                   on_create=self._said_created)
        return self._host

    def _lookup(self) -> Host:
        """The host to look names up in: the command's own once open, else one opened without --as (whose
        own name may be the one being looked up)."""
        if self._host is not None:
            return self._host
        if self._names_host is None:
            from .. import open as open_host

            self._names_host = open_host(self.backend_name, self.state, None, create=not self.state_given,
                                         on_create=self._said_created)
        return self._names_host

    def sim_state(self) -> str:
        """The simulator's folder for a ``sim`` command, with a host in it: at the default place one is made
        first, as any command's first use of the host makes it (``host``); a folder named with --state or
        $XENEVT_STATE never gets one unasked (``xenevt sim init`` makes it; the error says so)."""
        if not self.state_given:
            from .. import open as open_host

            with open_host("sim", self.state, create=True, on_create=self._said_created) as made:
                made.domains()  # (the first look makes it)
        return self.state

    def _said_created(self, state: str) -> None:
        self.note(f"xenevt: no Xen here; created a simulated host (2 domains, 2 vCPUs each) at {state}")

    def close(self) -> None:
        try:
            for host in (self._host, self._names_host):
                if host is not None:
                    host.shutdown()
        finally:
            self.close_pager()

    def close_pager(self) -> None:
        """Write what the pager held, or wait for the person reading to quit it."""
        paged, self._paged = self._paged, None
        if paged is not None:
            self._text = self._out = None
            paged.close()

    def two_level(self, domain: int, ports) -> bool:
        """Whether ``ports`` of ``domain`` were read in the 2-level ABI (their flags are its pending and mask bits
        alone, their word those two bits): the host is asked only where a port's word was read."""
        return any(st.word is not None for st in ports) and self.host.abi(domain) == "2-level"

    def emit(self, data: dict, text: str | None = None) -> None:
        """JSON when --json (one document of the schema, ``"schema"`` first: a stream's line), else ``text`` (or
        nothing)."""
        if self.json:
            import json

            from ..schema import VERSION

            out = self.stdout
            out.write(json.dumps({"schema": VERSION} | data, sort_keys=False) + "\n")
            out.flush()
        elif text is not None:
            out = self.stdout
            out.write(text + "\n")
            out.flush()  # (one result, or one event of a stream: a reader at the other end sees it now)


def consume_events(c: Ctx, domain: int, vcpu: int, count: int | None, timeout: float | None,
                   ping: Callable[[], object] | None = None, every: float | None = None) -> tuple[int, bool]:
    """Print each event as the guest takes it (``wait``, and ``bind`` holding its port): Host.events' loop, one
    backend call per batch.  Returns the number of events and whether Ctrl-C stopped it."""
    ev = c.host.events(domain, vcpu, count=count, timeout=timeout, ping=ping, every=every)
    try:
        for port in ev:
            c.emit({"domain": domain, "vcpu": vcpu, "port": port, "time": time.time()},
                   f"domain {domain} vCPU {vcpu}: event on port {port}")
    except KeyboardInterrupt:
        return ev.got, True
    return ev.got, False


def whole_host(command):
    """A view that reads a whole host (``list``, ``dump``, ``doctor``) runs with the cyclic garbage collector
    paused: a host's 40,000 ports become some 300,000 objects, none of them in a cycle, and each collection the
    allocations set off walked them all again (a quarter of doctor's time on the bench's hosts).  Given back as
    it was when the command returns or fails (tests run commands in-process)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        was = gc.isenabled()
        gc.disable()
        try:
            return command(*args, **kwargs)
        finally:
            if was:
                gc.enable()

    return run


def _reader_left() -> None:
    raise BrokenPipeError




# --- the global options: declared once here, accepted before the command (the group) and after it (every
# command, through pass_ctx); each recorded on the one Ctx by ``_noted``, which refuses two different values.
NONE, ONE, MANY = "none", "one", "many"  # what a command does with domains (Ctx.enter)

_GLOBALS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--backend", "-b", "backend"), {
        "type": click.Choice(["auto", "sim", "xen"]), "metavar": "auto|sim|xen",
        "help": "auto (default; $XENEVT_BACKEND): real Xen where /dev/xen/evtchn exists, else the simulator."}),
    (("--state", "state"), {
        "metavar": "DIR",
        "help": "Simulator state directory (default $XENEVT_STATE, $XDG_RUNTIME_DIR/xenevt, ~/.local/state/xenevt)."}),
    (("--domain", "-d", "domain"), {
        "type": DOMAIN, "multiple": True, "metavar": "DOMAIN",
        "help": "Domain to act on, by id or name (Domain-0, a guest's name); default: --as's, else 0."}),
    (("--as", "caller"), {
        "type": DOMAIN, "metavar": "DOMAIN",
        "help": "Simulator: the domain making the calls (default: the domain itself; dom0 is privileged); "
                "it is also the domain acted on where no --domain is given."}),
    (("--json", "json"), {"is_flag": True, "help": "Print JSON (errors too, as an object on stdout)."}),
    (("--no-pager", "no_pager"), {
        "is_flag": True, "help": "Never pipe text views into $PAGER (else they go through XENEVT_PAGER, PAGER or "
                                 "'less -FRX' when longer than the terminal)."}),
    (("--debug", "debug"), {"is_flag": True, "help": "Show tracebacks of unexpected errors."}),
)
_ALL_DOMAINS = (("--all-domains", "all_domains"), {"is_flag": True, "help": "Every domain of the host."})


def context_of(ctx: click.Context) -> Ctx:
    """The one Ctx of a command line (made on the first option noted, or by the group)."""
    root = ctx.find_root()
    if not isinstance(root.obj, Ctx):
        root.obj = Ctx()
    return root.obj


def _noted(ctx: click.Context, param: click.Parameter, value):
    if value is not None and value is not False and value != ():
        context_of(ctx).note_option(str(param.name), value, "/".join(param.opts))
    return value


def _option(spec: tuple[tuple[str, ...], dict[str, Any]], hidden: bool) -> click.Option:
    decls, kw = spec
    return click.Option(list(decls), expose_value=False, callback=_noted, hidden=hidden, **kw)


def global_options(f):
    """The group's copy of the global options (before the command)."""
    params = getattr(f, "__click_params__", None)
    if params is None:
        params = f.__click_params__ = []
    params += [_option(spec, hidden=False) for spec in reversed(_GLOBALS)]
    return f


def pass_ctx(f):
    """Every command's entry: the global options after the command too (hidden in its help), the command's
    domain rule applied (Ctx.enter: NONE unless domain_option or domains_option says otherwise), and every
    domain given by name (an argument, a DOMAIN:PORT) turned into its id; then ``f(ctx, ...)``."""

    @functools.wraps(f)
    def run(*args, **kwargs):
        cctx = click.get_current_context()
        c = context_of(cctx)
        c.enter(cctx.command_path.removeprefix("xenevt").strip() or "xenevt", run.domain_arity,  # type: ignore[attr-defined]
                run.prints_json)  # type: ignore[attr-defined]
        return f(c, *args, **{k: _resolved(c, v) for k, v in kwargs.items()})

    run.domain_arity = NONE  # type: ignore[attr-defined]
    run.prints_json = False  # type: ignore[attr-defined]
    run.__click_params__ = [_option(spec, hidden=True) for spec in reversed(_GLOBALS)]  # type: ignore[attr-defined]
    return run


def _resolved(c: Ctx, value):
    if isinstance(value, DomainName):
        return c.resolve(value)
    if isinstance(value, tuple) and any(isinstance(v, (DomainName, tuple)) for v in value):
        return tuple(_resolved(c, v) for v in value)
    return value


def _show(f, name: str, help: str | None = None) -> None:
    for p in f.__click_params__:
        if p.name == name:
            p.hidden = False
            if help is not None:
                p.help = help


def domain_option(f):
    """The command acts on one domain (-d, either position; --as's; else dom0): Ctx.domain()."""
    f.domain_arity = ONE
    _show(f, "domain", "The domain acted on, by id or name (default: --as's, else 0).")
    return f


def domains_option(f):
    """The command reads one or more domains (-d repeatable, --all-domains): Ctx.domains()."""
    f.domain_arity = MANY
    _show(f, "domain", "A domain to read, by id or name (repeatable; default: --as's, else 0).")
    f.__click_params__.append(_option(_ALL_DOMAINS, hidden=False))
    return f


def targets_option(f):
    """The command acts on the domains named (-d repeatable, --as's) and has its own word for all of them."""
    f.domain_arity = MANY
    _show(f, "domain", "A domain to act on, by id or name (repeatable).")
    return f


def yes_option(f):
    return click.option("--yes", "-y", is_flag=True, help="Do not ask (needed where no terminal can be asked).")(f)


def settled(cmd: click.Command) -> click.Command:
    """A command with an option of its own named as a global one (``sim device add --backend DOMAIN``): its own
    wins, and the global one is accepted before the command only."""
    own = {o for p in cmd.params if not getattr(p, "hidden", False) for o in p.opts}
    cmd.params = [p for p in cmd.params if not (getattr(p, "hidden", False) and own & set(p.opts))]
    return cmd


def json_option(f):
    """The command prints JSON with --json (one document of the schema, xenevt/data/schema.json): the option,
    accepted after every command, is listed in its help (a command without it refuses --json)."""
    f.prints_json = True
    _show(f, "json", "Print JSON.")
    return f
