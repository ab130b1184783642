"""Fuzz target: the lsevtchn text reader, then doctor's verdict on what it read."""

from __future__ import annotations

from tests import edump_writer as ew
from xenevt.evidence import doctor, lsevtchn

from .harness import target


def _seeds() -> list[bytes]:
    lines = [ew.lsevtchn_line(1, 0, "interdomain", d=1, rp=4), ew.lsevtchn_line(2, 1, "unbound", d=3),
             ew.lsevtchn_line(3, 0, "virq", virq=23), ew.lsevtchn_line(4, 0, "pirq", pirq=9),
             ew.lsevtchn_line(5, 8191, "ipi"), ew.lsevtchn_line(6, 2, "unknown"),
             ew.lsevtchn_line(131071, 3, "interdomain", d=32751, rp=131071),
             ew.lsevtchn_line(99999, 0, "unbound", d=65535)]
    return ["\n".join(lines).encode() + b"\n", "\n".join(lines[:3]).encode(), b"", b"   1: VCPU 0: IPI\n"]


_TOKENS = [b": VCPU ", b"Interdomain (Waiting connection) - Remote Domain ",
           b"Interdomain (Connected) - Remote Domain ", b", Port ", b"Physical IRQ ", b"Virtual IRQ ", b"IPI",
           b"Unknown", b"\n", b"   ", b"131071", b"131072", b"32752", b"65536", b"8192", b"\xc2\xb9", b"\xd9\xa3",
           b"\r\n", b"\t", b"\xe2\x80\xa8"]


@target("lsevtchn", _seeds(), tokens=_TOKENS)
def run(data: bytes) -> None:
    ev = lsevtchn.parse(data, 0, "fuzz.txt")
    doctor.examine(ev).as_dict()
