"""What every command shares: the chosen backend, output, and argument types.

Commands never pick a backend themselves: they ask the context, which asks
``select_backend`` once with the global options (and never the simulator
directly: creating the default host is the backend layer's job too).  Commands that only inspect
say so, and the simulator then opens its state read-only.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .. import abi

if TYPE_CHECKING:
    from rich.console import Console

    from .._front.host import Host
    from ..dump.text import TextOut
    from .pager import Paged


class Ctx:
    def __init__(self, backend: str, state: str | None, domain: int | None, caller: int | None, as_json: bool,
                 debug: bool, pager: bool = True):
        self.backend_name = backend
        from .._front.host import default_state_dir  # (here, not at import: `xenevt --help` needs no backend)

        self.state_given = state is not None or bool(os.environ.get("XENEVT_STATE"))
        self.state = state or default_state_dir()
        self.domain_default = domain
        self.caller = caller
        self.json = as_json
        self.debug = debug
        self.pager = pager
        self._paged: Paged | None = None
        self._text: TextOut | None = None
        self._out: Console | None = None
        self._err: Console | None = None
        self._host: Host | None = None

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

    def domain(self, local: int | None) -> int:
        """The domain a command is about: its own --domain, else the global one, else dom0."""
        if local is not None:
            return local
        return 0 if self.domain_default is None else self.domain_default

    @property
    def host(self):
        """The host the global options name (xenevt.open: the backend chosen once, opened on first use)."""
        if self._host is None:
            from .. import open as open_host

            # on a laptop with no Xen and no host yet, the default location gets one (said on stderr)
            self._host = open_host(self.backend_name, self.state, self.caller, create=not self.state_given,
                                   on_create=self._said_created)
        return self._host

    def backend(self, read_only: bool = False):
        """The host's backend, for the views that draw what the front door does not return (info, watch, sim)."""
        return self.host.backend(read_only)

    def sim_state(self) -> str:
        """The simulator's folder for a ``sim`` command, with a host in it: at the default place one is made
        first, as any command's first use of the host makes it (``host``); a folder named with --state or
        $XENEVT_STATE never gets one unasked (``xenevt sim init`` makes it; the error says so)."""
        if not self.state_given:
            from .. import open as open_host

            with open_host("sim", self.state, create=True, on_create=self._said_created) as made:
                made.backend(read_only=True)
        return self.state

    def _said_created(self, state: str) -> None:
        self.note(f"xenevt: no Xen here; created a simulated host (2 domains, 2 vCPUs each) at {state}")

    def close(self) -> None:
        try:
            if self._host is not None:
                self._host.shutdown()
        finally:
            self.close_pager()

    def close_pager(self) -> None:
        """Write what the pager held, or wait for the person reading to quit it."""
        paged, self._paged = self._paged, None
        if paged is not None:
            self._text = self._out = None
            paged.close()

    def emit(self, data, text: str | None = None) -> None:
        """JSON when --json, else ``text`` (or nothing)."""
        if self.json:
            import json

            out = self.stdout
            out.write(json.dumps(data, sort_keys=False) + "\n")
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


pass_ctx = click.make_pass_decorator(Ctx)


class _IntRange(click.ParamType):
    """An integer (decimal or 0x hex) in a range, with an error that names the value and the range."""

    def __init__(self, what: str, lo: int, hi: int, why: str = "", align: int = 1, metavar: str = "N",
                 complete: str = ""):
        self.name = what
        self.lo, self.hi, self.why, self.align = lo, hi, why, align
        self.metavar, self.complete = metavar, complete

    def get_metavar(self, param, ctx=None):  # (click 8.2 passes ctx; 8.1 does not)
        """One token in an option's help (``--gfn GFN``), where click would write the name (``FRAME NUMBER``);
        an argument keeps its own name (REMOTE_PORT)."""
        return None if isinstance(param, click.Argument) else self.metavar

    def shell_complete(self, ctx, param, incomplete):
        """A TAB on a domain or port: the host's own (cli/completion.py; nothing when it has none)."""
        if not self.complete:
            return []
        from . import completion

        return getattr(completion, self.complete)(ctx, incomplete)

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            n = value
        else:
            try:
                n = int(str(value), 0)
            except ValueError:
                self.fail(f"{self.name} {value!r} is not a number", param, ctx)
        if n % self.align:
            self.fail(f"{self.name} {n} is not {self.align}-byte aligned{self.why}", param, ctx)
        if not self.lo <= n <= self.hi:
            self.fail(f"{self.name} {n} out of range {self.lo}..{self.hi}{self.why}", param, ctx)
        return n


PORT = _IntRange("port", 1, abi.EVTCHN_FIFO_NR_CHANNELS - 1, " (port 0 is never valid; the FIFO ABI has 2^17 ports)",
                 metavar="PORT", complete="ports")
DOMAIN = _IntRange("domain", 0, abi.DOMID_FIRST_RESERVED - 1, metavar="DOMAIN", complete="domains")
VCPU = _IntRange("vCPU", 0, 4095, metavar="VCPU")
PRIORITY = _IntRange("priority", abi.EVTCHN_FIFO_PRIORITY_MAX, abi.EVTCHN_FIFO_PRIORITY_MIN, " (0 highest, 15 lowest)",
                     metavar="PRIORITY")
COUNT = _IntRange("count", 1, 1 << 31)
GFN = _IntRange("frame number", 0, (1 << 52) - 1, metavar="GFN")
CB_OFFSET = _IntRange("control-block offset", 0, abi.PAGE_SIZE - abi.CONTROL_BLOCK_SIZE,
                      f" inside the page (0..{abi.PAGE_SIZE - abi.CONTROL_BLOCK_SIZE})", align=8, metavar="OFFSET")
# KASLR moves an x86-64 kernel inside its 1 GiB window in 2 MiB steps (dump's and doctor's --kaslr-offset)
KASLR_OFFSET = _IntRange("KASLR offset", 0, (1 << 30) - (2 << 20), " (2 MiB steps inside the kernel's 1 GiB window)",
                         align=2 << 20, metavar="OFFSET")


class _Number(click.ParamType):
    """A finite real number in a range (seconds, rates): nan and inf are refused here, at parse time, where
    click's FloatRange lets nan through every comparison (a wait that never ends, a storm rate that is never
    exceeded).  The error names the option, the value and the range."""

    def __init__(self, what: str, lo: float, hi: float, unit: str = "", metavar: str = "SECONDS"):
        self.name = what
        self.lo, self.hi, self.unit = lo, hi, unit
        self.metavar = metavar

    def get_metavar(self, param, ctx=None):
        return None if isinstance(param, click.Argument) else self.metavar

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            x = float(value)
        else:
            try:
                x = float(str(value).strip())
            except ValueError:
                self.fail(f"{self.name} {value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{self.name} {value!r} is not a finite number", param, ctx)
        if not self.lo <= x <= self.hi:
            shown = value.strip() if isinstance(value, str) else f"{x:.12g}"
            self.fail(f"{self.name} {shown} out of range {self.lo:.12g}..{self.hi:.12g}{self.unit}", param, ctx)
        return x


YEAR = 365 * 86400.0
TIMEOUT = _Number("timeout", 0, YEAR, unit=" s")  # (a year: a bound that a deadline's arithmetic can hold)
DURATION = _Number("duration", 0, YEAR, unit=" s")
PING_INTERVAL = _Number("interval", 0.001, 3600, unit=" s")
WATCH_INTERVAL = _Number("interval", 0.05, 3600, unit=" s")
SAMPLE_INTERVAL = _Number("interval", 0.1, 3600, unit=" s")
RATE = _Number("rate", 1, 1e9, unit=" events/s", metavar="RATE")
DOMAINS = _IntRange("domain count", 1, abi.DOMID_FIRST_RESERVED)  # (domids 0..n-1: sim.statefile.MAX_DOMAINS)
VCPUS = _IntRange("vCPU count", 1, 256)
MAX_PORTS = _IntRange("port limit", 2, abi.EVTCHN_FIFO_NR_CHANNELS)
QUEUES = _IntRange("queue count", 1, 64)  # (sim.xenstore.MAX_QUEUES)
SIM_VCPU = _IntRange("vCPU", 0, 255, metavar="VCPU")


class Pair(click.ParamType):
    """``A:B`` where each side has its own type, e.g. DOMAIN:PORT or GFN:OFFSET."""

    def __init__(self, left: click.ParamType, right: click.ParamType, name: str):
        self.left, self.right, self.name = left, right, name

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        a, sep, b = str(value).partition(":")
        if not sep:
            self.fail(f"{value!r} is not {self.name}", param, ctx)
        return self.left.convert(a, param, ctx), self.right.convert(b, param, ctx)


class _Virq(click.ParamType):
    name = "virq"

    def get_metavar(self, param, ctx=None):
        return None if isinstance(param, click.Argument) else "VIRQ"

    def shell_complete(self, ctx, param, incomplete):
        from .completion import virqs

        return virqs(incomplete)

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        s = str(value).lower().removeprefix("virq_")
        if s in abi.VIRQS:
            return abi.VIRQS[s]
        try:
            n = int(s, 0)
        except ValueError:
            self.fail(f"unknown VIRQ {value!r} (names: {', '.join(abi.VIRQS)}; or a number)", param, ctx)
        if not 0 <= n < 24:
            self.fail(f"VIRQ {n} out of range 0..23", param, ctx)
        return n


VIRQ = _Virq()


def domain_option(f):
    return click.option("--domain", "-d", "local_domain", type=DOMAIN, default=None,
                        help="Domain the port belongs to (default: the global --domain, else 0).")(f)


def json_option(f):
    """--json is accepted after the command too; it sets the global flag."""

    def set_json(ctx, param, value):
        if value:
            ctx.find_object(Ctx).json = True
        return value

    return click.option("--json", "local_json", is_flag=True, expose_value=False, callback=set_json,
                        help="Print JSON.")(f)

