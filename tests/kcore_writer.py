"""Lays a guest's FIFO or 2-level memory out the way a Linux kernel holds it, seen through /proc/kcore.

Produces three files from a DomainMemory: an ELF core whose PT_LOAD segments
place kernel data, per-CPU areas and direct-mapped pages at kernel virtual
addresses; a kallsyms listing (per-CPU symbols as section offsets, as x86_64
lists them); and a 'possible CPUs' file.  The reader under test gets nothing
else, so a passing test means it followed the pointers as on a real kernel.

A 2-level image is laid out as Linux 6.1/6.12 keep it: ``HYPERVISOR_shared_info``
points at the shared_info page, each CPU's ``xen_vcpu`` at its registered
``xen_vcpu_info`` in its per-CPU area (the slot in shared_info then holds stale
bytes, which a reader must not take), ``cpu_evtchn_mask`` per CPU says which
ports it handles, ``current_word_idx``/``current_bit_idx`` where its scan resumes.
"""

from __future__ import annotations

import struct

from xenevt import abi

KDATA = 0xFFFFFFFF82000000       # static kernel data
PCPU = 0xFFFF888100000000         # per-CPU areas, 64 KiB apart
DMAP_PAGES = 0xFFFF888010000000   # event-array pages
DMAP_CB = 0xFFFF888020000000      # control-block pages
DMAP_SHARED = 0xFFFF888030000000  # the shared_info page (2-level)
SYM = {"event_array": KDATA, "event_array_pages": KDATA + 0x1000, "__per_cpu_offset": KDATA + 0x2000,
       "evtchn_ops": KDATA + 0x3000, "evtchn_ops_fifo": KDATA + 0x4000, "evtchn_ops_2l": KDATA + 0x4100}
L2_SYM = {"HYPERVISOR_shared_info": KDATA + 0x5000}
PERCPU_SYM = {"cpu_control_block": 0x100, "cpu_queue": 0x200}
L2_PERCPU_SYM = {"xen_vcpu": 0x300, "current_word_idx": 0x308, "current_bit_idx": 0x30C, "xen_vcpu_info": 0x400,
                 "cpu_evtchn_mask": 0x800}
STALE_SLOT = bytes([1, 0, 0, 0, 0, 0, 0, 0]) + b"\xff" * 8 + bytes(48)  # what a registered vCPU's old slot holds


def write(mem, folder, *, two_level=False, offline=(), hide=False, drop_symbol=None, cut_segment=False,
          in_shared=(), no_vcpu=()):
    """Write kcore/kallsyms/cpus for ``mem`` (one CPU per vCPU); returns their paths.

    ``two_level``: evtchn_ops says 2-level (a 2-level ``mem`` sets it itself and gets the 2-level symbols).
    ``in_shared``: CPUs whose xen_vcpu still points at shared_info's slot; ``no_vcpu``: CPUs whose xen_vcpu is
    NULL."""
    segments, symbols = layout(mem, two_level=two_level, offline=offline, cut_segment=cut_segment,
                               in_shared=in_shared, no_vcpu=no_vcpu)
    return _write_files(mem, folder, segments, symbols, hide, drop_symbol)


def layout(mem, *, two_level=False, offline=(), cut_segment=False, in_shared=(), no_vcpu=(), slide=0):
    """(segments: (kernel virtual address, bytes) each, symbols: (name, link-time address, per-CPU) each) of
    ``mem`` as Linux holds it.  ``slide``: the kernel image runs that far above its link-time addresses (KASLR):
    the segments sit there and pointers into the image are moved by it; per-CPU offsets and the direct map are
    not."""
    from xenevt.dump.decode import abi_of

    l2 = abi_of(mem) == "2-level"
    two_level = two_level or l2
    nv, npages = mem.nr_vcpus, mem.nr_pages
    kdata = bytearray(0x6000)
    for i in range(npages):
        struct.pack_into("<Q", kdata, 8 * i, DMAP_PAGES + i * abi.PAGE_SIZE)
    struct.pack_into("<I", kdata, 0x1000, npages)
    for cpu in range(nv):
        struct.pack_into("<Q", kdata, 0x2000 + 8 * cpu, PCPU + cpu * 0x10000)
    struct.pack_into("<Q", kdata, 0x3000, slide + (SYM["evtchn_ops_2l"] if two_level else SYM["evtchn_ops_fifo"]))
    pcpu = bytearray(nv * 0x10000)
    for cpu in range(nv):
        base = cpu * 0x10000
        cb = mem.cb_byte_offset(cpu)
        if cb is not None and cpu not in offline:
            struct.pack_into("<Q", pcpu, base + PERCPU_SYM["cpu_control_block"], DMAP_CB + cpu * abi.PAGE_SIZE)
        struct.pack_into("<16I", pcpu, base + PERCPU_SYM["cpu_queue"], *mem.guest(cpu)[1:17])
    segments_l2 = []
    if l2:
        struct.pack_into("<Q", kdata, 0x5000, DMAP_SHARED)
        at = mem.geometry.l2_offset
        shared = bytearray(mem.buffer[at: at + abi.PAGE_SIZE])
        masks = [0] * nv
        for port in range(min(mem.nr_chans, abi.EVTCHN_2L_NR_CHANNELS)):
            v = mem.chan(port).notify_vcpu
            if v < nv:
                masks[v] |= 1 << port
        for cpu in range(nv):
            base = cpu * 0x10000
            info = bytes(mem.buffer[mem.geometry.vcpu_info_offset(cpu):][:64])
            if cpu in no_vcpu:
                ptr = 0
            elif cpu in in_shared and cpu < 32:
                ptr = DMAP_SHARED + 64 * cpu
                shared[64 * cpu: 64 * cpu + 64] = info
            else:
                ptr = PCPU + base + L2_PERCPU_SYM["xen_vcpu_info"]
                pcpu[base + L2_PERCPU_SYM["xen_vcpu_info"]: base + L2_PERCPU_SYM["xen_vcpu_info"] + 64] = info
                if cpu < 32:
                    shared[64 * cpu: 64 * cpu + 64] = STALE_SLOT
            struct.pack_into("<Q", pcpu, base + L2_PERCPU_SYM["xen_vcpu"], ptr)
            scan = mem.l2_scan(cpu)
            struct.pack_into("<II", pcpu, base + L2_PERCPU_SYM["current_word_idx"], scan[0], scan[1])
            pcpu[base + L2_PERCPU_SYM["cpu_evtchn_mask"]: base + L2_PERCPU_SYM["cpu_evtchn_mask"] + 512] = \
                masks[cpu].to_bytes(512, "little")
        segments_l2 = [(DMAP_SHARED, bytes(shared))]
    pages = b"".join(bytes(mem.page_words(i)) for i in range(npages))
    cbpages = bytearray(nv * abi.PAGE_SIZE)
    for cpu in range(nv):
        cb = mem.control_block(cpu)
        if cb is not None:
            cbpages[cpu * abi.PAGE_SIZE: cpu * abi.PAGE_SIZE + abi.CONTROL_BLOCK_SIZE] = bytes(cb)
    segments = [(KDATA + slide, bytes(kdata)), (PCPU, bytes(pcpu)), (DMAP_PAGES, pages), (DMAP_CB, bytes(cbpages))]
    segments += segments_l2
    if cut_segment:
        segments = segments[:2] + [(DMAP_PAGES, pages[: abi.PAGE_SIZE // 2])] + segments[3:]
    percpu = PERCPU_SYM | (L2_PERCPU_SYM if l2 else {})
    symbols = [(n, a, False) for n, a in list(SYM.items()) + list(L2_SYM.items() if l2 else [])]
    symbols += [(n, a, True) for n, a in percpu.items()]
    return segments, symbols


def _write_files(mem, folder, segments, symbols, hide, drop_symbol):
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
        for name, addr, per_cpu in symbols:
            if name == drop_symbol:
                continue
            f.write(f"{0 if hide else addr:016x} {'d' if per_cpu else 'b'} {name}\n")
        f.write("ffffffffc0000000 t some_module_fn\t[xen_evtchn]\n")
    nv = mem.nr_vcpus
    cpus = folder / "possible"
    cpus.write_text(f"0-{nv - 1}\n" if nv > 1 else "0\n")
    return str(core), str(syms), str(cpus)
