"""Fuzz target: the 'e' debug-key dump reader, then doctor's verdict on what it read."""

from __future__ import annotations

from tests import edump_writer as ew
from xenevt.evidence import doctor, edump

from .harness import target


def _seeds() -> list[bytes]:
    """Real-looking dumps: both ABIs, old and new FIFO, XSM, widest numbers, prefixes and timestamps."""
    fifo = [ew.port_line(1, "interdomain", p=1, word={"linked": True, "link": 12345}, d=1, rp=7),
            ew.port_line(2, "virq", n=1, word={"linked": False}, virq=23),
            ew.port_line(3, "interdomain", p=1, m=1, word={"linked": False, "busy": True}, d=32751, rp=131071),
            ew.port_line(4, "unbound", word={"linked": True, "busy": True, "link": 131071}, d=65535),
            ew.port_line(99999, "pirq", word=None, pirq=17, irq=-1),
            ew.port_line(131071, "ipi", n=8191, x=7, word={"linked": True, "link": 0}, xsm="system_u:object_r:x_t")]
    old = [ew.port_line(1, "virq", word={"linked": True, "link": 10000}, old=True, virq=1),
           ew.port_line(2, "ipi", word=None, old=True), ew.port_line(3, "reserved", word={"linked": False}, old=True)]
    two = [ew.port_line(1, "interdomain", p=1, two_level_sel=0, d=0, rp=9), ew.port_line(4095, "ipi", two_level_sel=1),
           ew.port_line(7, "pirq", pirq=2147483647, irq=-2147483648, two_level_sel=1, xsm="u:r:t")]
    dumps = [
        ew.console(ew.domain_lines(0, fifo, polling="0-3,5") + ew.domain_lines(1, old, abi_line="FIFO",
                                                                               new_header=True)),
        ew.console(ew.domain_lines(2, two, polling="8191", abi_line="2-level"), stamps=True),
        ew.console(ew.domain_lines(32751, fifo + old), prefix=""),
        "(XEN) boot noise\n" + ew.console(ew.domain_lines(0, fifo[:2])) + "(XEN) later noise\n"
        + ew.console(ew.domain_lines(0, fifo[2:]), stamps=True),
        "\n".join(f"(XEN) {line}" for line in fifo[3:] + ew.domain_lines(5, two)),  # the ring lost the start
    ]
    return [d.encode() for d in dumps]


_TOKENS = [b"(XEN) ", b"(XEN) [  123.456789] ", b"'e' pressed -> dumping event-channel info\n",
           b"Event channel information for domain ", b"Event channel information for d", b"ABI: FIFO", b"ABI: 2-level",
           b"Polling vCPUs: {", b"0-99999999", b"8191", b"8192", b"}", b"    port [p/m/s]", b" [1/1/", b"]: s=",
           b" n=", b" x=", b" d=", b" p=", b" i=", b" v=", b" Z=", b"?     ", b"?   ", b"B ", b"  -   ", b"-   ",
           b"\n", b"131071", b"131072", b"32751", b"32752", b"65536", b"10000", b"\xc2\xb9", b"\xe2\x81\xb4",
           b"\xd9\xa3", b"s=42", b"s=0", b"\r\n", b"\x0b", b"\xe2\x80\xa8"]


@target("edump", _seeds(), tokens=_TOKENS)
def run(data: bytes) -> None:
    ev = edump.parse(data, "fuzz.txt")
    doctor.examine(ev).as_dict()
