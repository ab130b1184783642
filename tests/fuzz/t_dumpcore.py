"""Fuzz target: a guest kernel in an ``xl dump-core`` file, read with its System.map (``dump --dump-core FILE
--system-map MAP``): the ELF sections and Xen notes, the page-table walk from each vCPU's CR3, the KASLR search,
then Linux's FIFO or 2-level state through ``linux`` as --self reads it.

An input is ``u32 length of the System.map`` + the System.map (or a vmlinux's symbol table) + the dump-core
file.  Seeds are
tests/guestmem_writer.py's guests: FIFO and 2-level, HVM with a KASLR slide and PV (MFNs through .xen_p2m, a
2-level shared_info in .xen_shared_info), one with vCPU 0 in user mode under PTI, one whose symbols come from a
vmlinux ELF.  Both end in the dump model, as the command does, under a 128 MiB address-space limit above the
worker's own (MEMORY_LIMIT).  A truncated file stops at its section table, so seven inputs in eight (by a hash of
the input) have the dump-core part fitted back to the nearest seed's length: truncations and insertions then keep
the sections where their headers say, and the fields are what is fuzzed.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import struct
import tempfile
import zlib

from xenevt.dump import build_dump
from xenevt.memory import Ask, open_source

from .harness import target
from .t_kcore import _guest, _guest_2l

_DIR = pathlib.Path(tempfile.mkdtemp(prefix="xenevt-fuzz-dumpcore-"))
_PARENT = os.getpid()
atexit.register(lambda: os.getpid() == _PARENT and shutil.rmtree(_DIR, ignore_errors=True))


def _seed(mem, vmlinux=False, **kw) -> bytes:
    from tests import guestmem_writer

    d = pathlib.Path(tempfile.mkdtemp(dir=_DIR))
    g = guestmem_writer.GuestImage(mem, **kw)
    smap = pathlib.Path(g.vmlinux(d / "vmlinux") if vmlinux else g.system_map(d / "System.map")).read_bytes()
    core = pathlib.Path(g.dump_core(d / "core")).read_bytes()
    shutil.rmtree(d)
    return struct.pack("<I", len(smap)) + smap + core


SEEDS = [_seed(_guest(), slide=0x1A400000), _seed(_guest(), pv=True), _seed(_guest_2l(), slide=0x200000),
         _seed(_guest_2l(), pv=True), _seed(_guest(1, 1), slide=0x400000, user_mode=(0,)),
         _seed(_guest(1, 1), vmlinux=True)]


# the reader's whole budget above the worker: an input is under a MiB, and a read sized by a header field (a
# page count, a section size, a vCPU count) instead of by what is there fails the target as MemoryError
MEMORY_LIMIT = 128 << 20
_LENGTHS = sorted({len(s) - 4 - struct.unpack_from("<I", s)[0] for s in SEEDS})



@target("dumpcore", SEEDS, tokens=[b".xen_pages", b".xen_pfn", b".xen_p2m", b".xen_prstatus", b".note.Xen",
                                   b".xen_shared_info", b"Xen\0", b"\xed\xeb\x0f\xf0", b"\xee\xeb\x0f\xf0",
                                   b"linux_banner", b"evtchn_ops", b"__per_cpu_offset", b"ffffffffffffffff",
                                   b"\xff" * 8, b"\x63\x00\x00\x00", b"\xe3\x00\x00\x00", b"xen-3.0-x86_64"],
        memory_limit=MEMORY_LIMIT)
def run(data: bytes) -> None:
    n, = struct.unpack_from("<I", data.ljust(4, b"\0"))
    (_DIR / "System.map").write_bytes(data[4:4 + n])
    core = data[4 + n:]
    if zlib.crc32(data) % 8:
        fit = min(_LENGTHS, key=lambda size: abs(size - len(core)))
        core = core[:fit].ljust(fit, b"\0")
    (_DIR / "core").write_bytes(core)
    img = open_source(Ask(dump_core=str(_DIR / "core"), system_map=str(_DIR / "System.map"))).image()
    build_dump(img.mem, img.domain, img.source, guest_known=img.guest_known, vcpu_known=img.vcpu_known).as_dict()
