"""Fuzz target: this kernel's FIFO or 2-level state read through kcore and kallsyms, and frames mapped through
privcmd.

An input is a small container, so the mutations reach every file the readers take:

* ``K`` + u32 length of kallsyms + u32 length of the CPU list + kallsyms + CPU list + the ELF core, as
  tests/kcore_writer.py lays a guest out (``dump --self``);
* ``F`` + page count + vCPU count + per vCPU a u16 control-block offset + the frames' bytes, cut in 4 KiB
  pages (``dump --gfn G… --control G:OFFSET``).

Any other first byte picks one of the two by its low bit.  Both end in the dump model, as the commands do.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import struct
import tempfile

from xenevt import abi
from xenevt.dump import build_dump
from xenevt.dump.frames import from_frames
from xenevt.memory import Ask, open_source

from .harness import target

_DIR = pathlib.Path(tempfile.mkdtemp(prefix="xenevt-fuzz-kcore-"))
_PARENT = os.getpid()
atexit.register(lambda: os.getpid() == _PARENT and shutil.rmtree(_DIR, ignore_errors=True))


def _guest(nr_vcpus: int = 2, pages: int = 2):
    from tests import writer

    mem = writer.domain(nr_vcpus=nr_vcpus, pages=pages, ports={5: "P->9", 9: "PL->12", 12: "PL", 3: "PL",
                                                               20: "PL->5000", 7: "PM"},
                        heads={(0, 7): 5, (0, 2): 3, (nr_vcpus - 1, 4): 20},
                        ready={0: (1 << 7) | (1 << 2), nr_vcpus - 1: 1 << 4})
    mem.guest(0)[1 + 7] = 9
    return mem


def _kcore_seed(mem, **kw) -> bytes:
    from tests import kcore_writer

    d = pathlib.Path(tempfile.mkdtemp(dir=_DIR))
    core, syms, cpus = (pathlib.Path(p).read_bytes() for p in kcore_writer.write(mem, d, **kw))
    shutil.rmtree(d)
    return b"K" + struct.pack("<II", len(syms), len(cpus)) + syms + cpus + core


def _frames_seed(mem) -> bytes:
    pages = b"".join(bytes(mem.page_words(i)) for i in range(mem.nr_pages))
    cb_pages = b""
    for v in range(mem.nr_vcpus):
        page = bytearray(abi.PAGE_SIZE)
        page[:abi.CONTROL_BLOCK_SIZE] = bytes(mem.control_block(v))
        cb_pages += bytes(page)
    return (b"F" + bytes([mem.nr_pages, mem.nr_vcpus]) + struct.pack(f"<{mem.nr_vcpus}H", *[0] * mem.nr_vcpus)
            + pages + cb_pages)


def _guest_2l():
    """A 2-level kernel: ports pending, masked and on two CPUs, vCPU 1 mid-word in its scan."""
    from xenevt.dump.frames import from_shared_info

    page = bytearray(abi.PAGE_SIZE)
    struct.pack_into("<QQ", page, 2048, (1 << 3) | (1 << 9), 1 << 1)     # evtchn_pending: ports 3, 9, 65
    struct.pack_into("<Q", page, 2560, 1 << 9)                           # evtchn_mask: port 9
    info = struct.pack("<BB6xQ", 1, 0, 0b11).ljust(64, b"\0")
    masks = [(1 << 3 | 1 << 9).to_bytes(512, "little"), (1 << 65).to_bytes(512, "little")]
    return from_shared_info(bytes(page), [info, info], scan=[(0, 0), (1, 2)], cpu_masks=masks)


SEEDS = [_kcore_seed(_guest()), _kcore_seed(_guest(1, 1), offline=()), _kcore_seed(_guest(3, 1), offline=(1,)),
         _frames_seed(_guest()), _frames_seed(_guest(1, 1)), _kcore_seed(_guest_2l()),
         _kcore_seed(_guest_2l(), in_shared=(0,), no_vcpu=(1,))]


def _kcore(data: bytes) -> None:
    nsyms, ncpus = struct.unpack_from("<II", data.ljust(8, b"\0"), 0)
    body = data[8:]
    syms, cpus, core = body[:nsyms], body[nsyms:nsyms + ncpus], body[nsyms + ncpus:]
    for name, blob in (("kallsyms", syms), ("possible", cpus), ("kcore", core)):
        (_DIR / name).write_bytes(blob)
    ask = Ask(self_kernel=True, kcore=str(_DIR / "kcore"), kallsyms=str(_DIR / "kallsyms"),
              cpus_file=str(_DIR / "possible"))
    img = open_source(ask).image()  # the path `dump --self` takes
    build_dump(img.mem, img.domain, img.source, guest_known=img.guest_known, vcpu_known=img.vcpu_known).as_dict()



def _frames(data: bytes) -> None:
    npages, nv = data[0] if data else 0, data[1] if len(data) > 1 else 0
    offsets = struct.unpack_from(f"<{nv}H", data.ljust(2 + 2 * nv, b"\0"), 2)
    body = data[2 + 2 * nv:]
    frames = [body[i:i + abi.PAGE_SIZE] for i in range(0, len(body), abi.PAGE_SIZE)]
    pages, cb_frames = frames[:npages], frames[npages:]
    # the CLI's CB_OFFSET type takes 0..4096-72, 8-byte aligned; its frames come from the backend as given
    cbs = [cb_frames[v][o:o + abi.CONTROL_BLOCK_SIZE] if v < len(cb_frames) else None
           for v, o in enumerate(o % (abi.PAGE_SIZE - abi.CONTROL_BLOCK_SIZE + 1) // 8 * 8 for o in offsets)]
    mem = from_frames(pages, cbs or [None])
    build_dump(mem, 0, "privcmd frames", guest_known=False).as_dict()


@target("kcore", SEEDS, tokens=[b"event_array", b"cpu_queue", b"__per_cpu_offset", b"0-4294967295", b"0-8191",
                                b"ffffffffffffffff", b" d ", b"\n", b"\x7fELF", b"xen_vcpu", b"cpu_evtchn_mask",
                                b"HYPERVISOR_shared_info", b"current_word_idx"], memory_limit=128 << 20)
def run(data: bytes) -> None:
    kind = data[:1]
    if kind not in (b"K", b"F"):
        kind = b"K" if not data or data[0] & 1 else b"F"
    (_kcore if kind == b"K" else _frames)(data[1:])
