"""Lays a guest's FIFO memory out the way a Linux kernel holds it, seen through /proc/kcore.

Produces three files from a DomainMemory: an ELF core whose PT_LOAD segments
place kernel data, per-CPU areas and direct-mapped pages at kernel virtual
addresses; a kallsyms listing (per-CPU symbols as section offsets, as x86_64
lists them); and a 'possible CPUs' file.  The reader under test gets nothing
else, so a passing test means it followed the pointers as on a real kernel.
"""

from __future__ import annotations

import struct

from xenevt import abi

KDATA = 0xFFFFFFFF82000000       # static kernel data
PCPU = 0xFFFF888100000000         # per-CPU areas, 64 KiB apart
DMAP_PAGES = 0xFFFF888010000000   # event-array pages
DMAP_CB = 0xFFFF888020000000      # control-block pages
SYM = {"event_array": KDATA, "event_array_pages": KDATA + 0x1000, "__per_cpu_offset": KDATA + 0x2000,
       "evtchn_ops": KDATA + 0x3000, "evtchn_ops_fifo": KDATA + 0x4000, "evtchn_ops_2l": KDATA + 0x4100}
PERCPU_SYM = {"cpu_control_block": 0x100, "cpu_queue": 0x200}


def write(mem, folder, *, two_level=False, offline=(), hide=False, drop_symbol=None, cut_segment=False):
    """Write kcore/kallsyms/cpus for ``mem`` (one CPU per vCPU); returns their paths."""
    nv, npages = mem.nr_vcpus, mem.nr_pages
    kdata = bytearray(0x5000)
    for i in range(npages):
        struct.pack_into("<Q", kdata, 8 * i, DMAP_PAGES + i * abi.PAGE_SIZE)
    struct.pack_into("<I", kdata, 0x1000, npages)
    for cpu in range(nv):
        struct.pack_into("<Q", kdata, 0x2000 + 8 * cpu, PCPU + cpu * 0x10000)
    struct.pack_into("<Q", kdata, 0x3000, SYM["evtchn_ops_2l"] if two_level else SYM["evtchn_ops_fifo"])
    pcpu = bytearray(nv * 0x10000)
    for cpu in range(nv):
        base = cpu * 0x10000
        cb = mem.cb_byte_offset(cpu)
        if cb is not None and cpu not in offline:
            struct.pack_into("<Q", pcpu, base + PERCPU_SYM["cpu_control_block"], DMAP_CB + cpu * abi.PAGE_SIZE)
        struct.pack_into("<16I", pcpu, base + PERCPU_SYM["cpu_queue"], *mem.guest(cpu)[1:17])
    pages = b"".join(bytes(mem.page_words(i)) for i in range(npages))
    cbpages = bytearray(nv * abi.PAGE_SIZE)
    for cpu in range(nv):
        cb = mem.control_block(cpu)
        if cb is not None:
            cbpages[cpu * abi.PAGE_SIZE: cpu * abi.PAGE_SIZE + abi.CONTROL_BLOCK_SIZE] = bytes(cb)
    segments = [(KDATA, bytes(kdata)), (PCPU, bytes(pcpu)), (DMAP_PAGES, pages), (DMAP_CB, bytes(cbpages))]
    if cut_segment:
        segments = segments[:2] + [(DMAP_PAGES, pages[: abi.PAGE_SIZE // 2])] + segments[3:]
    core = folder / "kcore"
    with open(core, "wb") as f:
        phoff, phsize = 64, 56
        data_off = phoff + phsize * len(segments)
        ehdr = bytearray(64)
        ehdr[:7] = b"\x7fELF\x02\x01\x01"
        struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 4, 62, 1, 0, phoff, 0, 0, 64, phsize, len(segments), 0, 0, 0)
        f.write(ehdr)
        off = data_off
        for vaddr, blob in segments:
            f.write(struct.pack("<IIQQQQQQ", 1, 4, off, vaddr, 0, len(blob), len(blob), 4096))
            off += len(blob)
        for _, blob in segments:
            f.write(blob)
    syms = folder / "kallsyms"
    with open(syms, "w") as f:
        f.write("ffffffff81000000 T _stext\n")
        for name, addr in list(SYM.items()) + list(PERCPU_SYM.items()):
            if name == drop_symbol:
                continue
            f.write(f"{0 if hide else addr:016x} {'d' if name in PERCPU_SYM else 'b'} {name}\n")
        f.write("ffffffffc0000000 t some_module_fn\t[xen_evtchn]\n")
    cpus = folder / "possible"
    cpus.write_text(f"0-{nv - 1}\n" if nv > 1 else "0\n")
    return str(core), str(syms), str(cpus)
