"""Fuzz target: the Xen rows of /proc/interrupts (watch's per-IRQ counters on a real guest), then the rates."""

from __future__ import annotations

from xenevt.activity import Sample, parse_interrupts, rates

from .harness import target

_TEXT = """           CPU0       CPU1
  0:         38          0   IO-APIC   2-edge      timer
 24:      10342       2208  xen-percpu    -virq      timer0
 25:          0          0  xen-percpu    -ipi       resched0
 30:        411         17   xen-dyn    -event     xenbus
 31:       5012          0   xen-dyn    -event     hvc_console
 32:         77         12  xen-dyn-lateeoi    -event     evtchn:xenevt, evtchn:xenevt
 33:          3          1  xen-percpu-ipi       callfuncsingle1
NMI:          0          0   Non-maskable interrupts
LOC:          0          0   Local timer interrupts
ERR:          0
"""


def _seeds() -> list[bytes]:
    one = "           CPU0\n 40:         12  xen-dyn    -event     vif1.0-q0-tx\n"
    return [_TEXT.encode(), one.encode(), b"", b"CPU0\n"]


_TOKENS = [b"xen-dyn", b"xen-percpu", b"xen-dyn-lateeoi", b"xen-percpu-ipi", b"-event", b"-virq", b"-ipi", b"CPU",
           b"CPU7", b":", b"\n", b"          ", b"\xd9\xa3", b"1_000", b"-5", b"9" * 5000, b"\t"]


@target("interrupts", _seeds(), tokens=_TOKENS)
def run(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")  # what a reader of a kernel file must survive
    rows = parse_interrupts(text, "fuzz")
    before = Sample("fuzz", rows, 0.0)
    after = Sample("fuzz", parse_interrupts(text, "fuzz"), 1.0)
    rates(before, after)
