"""The CLI's argument types: integers and numbers in their ranges, domains by id or name, VIRQ names, pairs;
each error names the value and the range (click's own messages do not say which bound)."""

from __future__ import annotations

import math
import re

import click

from .. import abi


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


class DomainName(str):
    """A domain given by name on the command line: its id is looked up when the command runs (``Ctx.resolve``)."""

    shown = ""  # the option or argument and the value, for the error when no domain has that name


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]{0,63}")  # (no ':' or '=': DOMAIN:PORT and DOMAIN=ABI split on them)


class _Domain(_IntRange):
    """A domain by id (decimal or 0x hex) or by name (``Domain-0``, a guest's xenstore name); a word that reads
    as a number (nan, inf, 1e3) is a number, and must be an id in range."""

    def convert(self, value, param, ctx):
        if isinstance(value, (int, DomainName)):
            return value
        text = str(value)
        if _NAME.fullmatch(text):
            try:
                float(text)
            except ValueError:
                name = DomainName(text)
                name.shown = f"{param.get_error_hint(ctx) if param is not None else 'domain'} {text!r}"
                return name
        try:
            int(text, 0)
        except ValueError:
            try:
                float(text)
            except ValueError:
                self.fail(f"domain {text!r} is neither a domain id nor a domain name", param, ctx)
        return super().convert(value, param, ctx)


PORT = _IntRange("port", 1, abi.EVTCHN_FIFO_NR_CHANNELS - 1, " (port 0 is never valid; the FIFO ABI has 2^17 ports)",
                 metavar="PORT", complete="ports")
DOMAIN_ID = _IntRange("domain", 0, abi.DOMID_FIRST_RESERVED - 1, metavar="DOMAIN")
DOMAIN = _Domain("domain", 0, abi.DOMID_FIRST_RESERVED - 1, metavar="DOMAIN", complete="domains")
DOM0_NAME = "Domain-0"  # (xl's name for dom0, and what its xenstore node holds)
VCPU = _IntRange("vCPU", 0, 4095, metavar="VCPU")
PRIORITY = _IntRange("priority", abi.EVTCHN_FIFO_PRIORITY_MAX, abi.EVTCHN_FIFO_PRIORITY_MIN, " (0 highest, 15 lowest)",
                     metavar="PRIORITY")
COUNT = _IntRange("count", 1, 1 << 31)
REQUESTS = _IntRange("requests", 0, 1 << 20, metavar="N")  # on a PV ring per notify (sim device push; 0: none)
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
COLLECT_INTERVAL = _Number("interval", 1, 3600, unit=" s")
COLLECT_TIMEOUT = _Number("timeout", 0.5, 3600, unit=" s")
DOMAINS = _IntRange("domain count", 1, abi.DOMID_FIRST_RESERVED)  # (domids 0..n-1: sim.statefile.MAX_DOMAINS)
VCPUS = _IntRange("vCPU count", 1, 256)
MAX_PORTS = _IntRange("port limit", 2, abi.EVTCHN_FIFO_NR_CHANNELS)
QUEUES = _IntRange("queue count", 1, 64)  # (sim.xenstore.MAX_QUEUES)
TOP = _IntRange("count", 0, 10_000)
SIM_VCPU = _IntRange("vCPU", 0, 255, metavar="VCPU")
RUNNER_DOMUS = _IntRange("domU count", 0, 8)  # (xenevt runner: each a PV domU of 160 MB beside dom0's 1 GB)
RUNNER_TIMEOUT = _Number("timeout", 1, 86400, unit=" s", metavar="S")


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
