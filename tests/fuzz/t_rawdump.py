"""Fuzz target: raw dump files (``xenevt dump --raw``), loaded and shown as ``dump --from`` and ``doctor --from`` do.

Seeds are dumps of a busy simulated domain (guest heads and channel table saved), of frames only (neither),
of a guest part-way through consuming with a broken chain, the first again as a version 1 file, and three
2-level dumps (version 2): a simulated domain with its channel table and Linux's scan positions and CPU
masks, a kernel's (masks, no table, one scan position mid-word), and frames (one vcpu_info unknown).
A mutated file almost never keeps its CRC, and a CRC mismatch is all the loader would then see: so seven
inputs in eight have their length fitted back to a seed's and their CRC recomputed, and the fields behind
the checksum are what is fuzzed.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import pathlib
import shutil
import tempfile
import zlib

from rich.console import Console

from xenevt.dump import build_dump
from xenevt.dump.rawfile import CRC, HEADER2_AT, HEADER_SIZE, encode
from xenevt.dump.render import render_dump
from xenevt.evidence import collect
from xenevt.evidence import doctor as rules
from xenevt.evidence.model import Evidence
from xenevt.memory import Ask, open_source
from xenevt.sim.host import SimHost, create_host

from .harness import target

_DIR = pathlib.Path(tempfile.mkdtemp(prefix="xenevt-fuzz-raw-"))
_PARENT = os.getpid()
atexit.register(lambda: os.getpid() == _PARENT and shutil.rmtree(_DIR, ignore_errors=True))
# rich's table costs ~0.3 ms a row (the text view's known cost, issue 15): larger dumps are checked as JSON only
RENDER_WORDS = 64


def _seeds() -> list[bytes]:
    from tests import writer

    d = tempfile.mkdtemp(prefix="xenevt-fuzz-raw-")
    try:
        create_host(d, nr_domains=2, nr_vcpus=2, max_ports_dom0=64, max_ports_domu=64)
        with SimHost(d) as h:
            p1 = h.alloc_unbound(1, 1, 0)
            h.bind_interdomain(0, 0, 1, p1)
            h.bind_virq(0, 0, 0, vcpu=1)
            a, b = h.bind_ipi(0, 0), h.bind_ipi(0, 0)
            h.set_priority(0, 0, b, 2)
            for port in (a, b, a):
                h.send(0, 0, port)
            h.send(1, 1, p1)
            busy = encode(h.domain(0, "t").mem, 0, "sim domain 0")
            plain = encode(h.domain(1, "t").mem, 1, "frames", guest=False, channels=False)
        shutil.rmtree(d)
        create_host(d, nr_domains=2, nr_vcpus=2, max_ports_dom0=64, max_ports_domu=64, bare=(1,))
        with SimHost(d) as h:
            ports = [h.bind_ipi(1, 1, v % 2) for v in range(12)]
            for port in ports[::2]:
                h.send(1, 1, port)
            h.mask(1, 1, ports[2])
            h.send(1, 1, ports[2])
            mem = h.domain(1, "t").mem
            l2_sim = encode(mem, 1, "sim domain 1")
            mem.l2_scan(1)[1] = 7
            l2_kernel = encode(mem, 1, "kernel", channels=False)
            l2_frames = encode(mem, 1, "frames", guest=False, channels=False, vcpu_known=[True, False])
    finally:
        shutil.rmtree(d)
    mem = writer.domain(nr_vcpus=2, pages=1, ports={5: "P->9", 9: "PL->12", 12: "PL", 3: "PL", 20: "PL->5000"},
                        heads={(0, 7): 5, (0, 2): 3, (1, 4): 20}, ready={0: (1 << 7) | (1 << 2), 1: 1 << 4})
    mem.guest(0)[1 + 7] = 9
    return [busy, plain, encode(mem, 3, "kernel", channels=False), _version_1(busy), l2_sim, l2_kernel, l2_frames]


def _version_1(data: bytes) -> bytes:
    """The same FIFO dump as xenevt wrote it before 2-level: version 1, no abi field."""
    out = bytearray(data[:-CRC.size])
    out[8:12] = (1).to_bytes(4, "little")
    out[HEADER2_AT:HEADER_SIZE] = bytes(HEADER_SIZE - HEADER2_AT)
    return bytes(out) + CRC.pack(zlib.crc32(out))


SEEDS = _seeds()
SIZES = sorted({len(s) for s in SEEDS})


def _fit(data: bytes) -> bytes:
    if zlib.crc32(data) % 8 == 0:
        return data
    if len(data) not in SIZES:
        size = min(SIZES, key=lambda n: abs(n - len(data)))
        data = data[:size].ljust(size, b"\0")
    return data[:-CRC.size] + CRC.pack(zlib.crc32(data[:-CRC.size]))


@target("rawdump", SEEDS, tokens=[b"XENEVTDP", b"\x00\x00\x00\x00", b"\x01\x00\x00\x00", b"\x02\x00\x00\x00",
                                  b"\x03\x00\x00\x00", b"\x3f\x00\x00\x00", b"\x40\x00\x00\x00",
                                  b"\xff\xff\xff\xff"])
def run(data: bytes) -> None:
    path = _DIR / "fuzz.raw"
    path.write_bytes(_fit(data))
    src = open_source(Ask(from_file=str(path)))  # the path `dump --from` and `doctor --from` take
    img = src.image()
    dump = build_dump(img.mem, img.domain, img.source, channels=src.channels(), guest_known=img.guest_known,
                      max_ports=img.max_ports, vcpu_known=img.vcpu_known)
    json.dumps(dump.as_dict())
    if len(getattr(dump, "words", None) or getattr(dump, "ports", [])) <= RENDER_WORDS:
        render_dump(dump, Console(file=io.StringIO(), width=120, markup=False))
    ev = Evidence("raw dump fuzz.raw")
    collect.add_dump(ev, dump)
    rules.examine(ev).as_dict()

