"""The memory source "an ``xl dump-core`` file": a domain's memory saved by the toolstack, read post mortem.

The file is an ELF64 core with sections, no program headers (Xen's
docs/misc/dump-core-format.txt, tools/libs/guest/xg_core.c): ``.note.Xen``
(its header note gives the magic, PV or HVM, the vCPU and page counts and the
page size), ``.xen_prstatus`` (a vcpu_guest_context_t per vCPU: CR3 roots the
page-table walk), ``.xen_shared_info``, ``.xen_pages`` (the pages), and
``.xen_pfn`` (HVM: the GFN of each page, ascending) or ``.xen_p2m`` (PV:
(pfn, MFN) pairs; a PV guest's page tables hold MFNs).  Kernel virtual
addresses are translated by walking the 4-level x86-64 tables from a vCPU's
CR3, then ``foreign`` and ``linux`` read the kernel as from dom0.  Every size
and offset is checked against the file before use, and each lookup costs a
bisection or a dict probe, so a file costs time and memory linear in its
page count.
"""

from __future__ import annotations

import mmap
import os
import struct

from .. import abi
from .base import EventImage, MemorySource, MemoryUnavailable
from .foreign import (
    WANTED,
    PagedKernel,
    guest_cpus,
    locate_kernel,
    read_guest,
    read_system_map,
    slid,
    slide_text,
    symbol_bytes,
)
from .linux import KernelReadError

ET_CORE, EM_X86_64 = 4, 62
# xen/include/public/elfnote.h
XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003
XC_CORE_MAGIC, XC_CORE_MAGIC_HVM = 0xF00FEBED, 0xF00FEBEE  # tools/libs/guest/xg_core.h
INVALID = (1 << 64) - 1  # XC_CORE_INVALID_PFN / _GMFN: an unused slot, its page zero
# vcpu_guest_context (public/arch-x86/xen.h, x86_64): 512 fpu + 8 flags + 200 user_regs + 4096 trap_ctxt +
# 16 ldt + 136 gdt + 16 kernel ss/sp, then ctrlreg[8]; the whole struct is 5168 bytes
VCPU_CONTEXT_SIZE = 5168
CTRLREG = 4984
CR0_PG, CR4_PAE, CR4_LA57 = 1 << 31, 1 << 5, 1 << 12
PTE_PRESENT, PTE_PSE = 1, 1 << 7
PTE_FRAME = 0x000FFFFFFFFFF000  # bits 12-51: the next table's (or the page's) frame
PTI_USER = 1 << 12  # Linux's PTI: the user half of an 8 KiB PGD pair (CR3 while in user mode)
MAX_SECTIONS = 64   # xg_core.c writes 7
MAX_NOTES_BYTES = 1 << 16
MAX_VCPUS = 4096    # Xen's largest HVM_MAX_VCPUS / MAX_VIRT_CPUS on x86
MAX_ROOTS = 4       # distinct page tables tried for the kernel


class DumpCore:
    """The sections of one dump-core file, checked, and its pages by frame number."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.f = open(path, "rb")
            self.size = os.fstat(self.f.fileno()).st_size
        except OSError as e:
            raise MemoryUnavailable(f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None
        try:
            if self.size < 64:
                raise self.bad(0, "e_ident", f"{self.size} bytes: too short for an ELF header")
            try:
                self.m = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as e:
                raise MemoryUnavailable(f"cannot map {path}: {e}") from None
            self._parse()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if getattr(self, "m", None) is not None:
            self.m.close()
            self.m = None
        self.f.close()

    def __enter__(self) -> DumpCore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def bad(self, offset: int, field: str, why: str) -> KernelReadError:
        return KernelReadError(f"{self.path}, offset {offset:#x}, {field}: {why}")

    def _span(self, offset: int, size: int, field: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise self.bad(offset, field, f"{size} bytes at {offset:#x} run past the end of the file ({self.size} "
                           "bytes)")
        return self.m[offset: offset + size]

    def _parse(self) -> None:
        h = self.m[:64]
        if h[:4] != b"\x7fELF":
            raise self.bad(0, "e_ident", "not an ELF file (an xl dump-core file is one)")
        if h[4] != 2 or h[5] != 1:
            raise self.bad(4, "e_ident", "not ELFCLASS64 little-endian (dump-core files always are)")
        e_type, e_machine = struct.unpack_from("<HH", h, 16)
        if e_type != ET_CORE:
            raise self.bad(16, "e_type", f"{e_type}, not ET_CORE (4)")
        if e_machine != EM_X86_64:
            raise self.bad(18, "e_machine", f"{e_machine}: only x86-64 guests are read (a 32-bit PV guest says 3)")
        shoff, = struct.unpack_from("<Q", h, 40)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", h, 58)
        if shentsize != 64:
            raise self.bad(58, "e_shentsize", f"{shentsize}, not 64")
        if not 0 < shnum <= MAX_SECTIONS:
            raise self.bad(60, "e_shnum", f"{shnum} sections: a dump-core file has 1 to {MAX_SECTIONS}")
        if shstrndx >= shnum:
            raise self.bad(62, "e_shstrndx", f"section {shstrndx} of {shnum}")
        table = self._span(shoff, 64 * shnum, "the section header table")
        heads = [struct.unpack_from("<IIQQQQIIQQ", table, 64 * i) for i in range(shnum)]
        st = heads[shstrndx]
        strtab = self._span(st[4], st[5], "sh_offset/sh_size of .shstrtab") if st[5] <= MAX_NOTES_BYTES else None
        if strtab is None:
            raise self.bad(shoff + 64 * shstrndx + 32, "sh_size of .shstrtab", f"{st[5]} bytes")
        self.sections: dict[str, tuple[int, int, int, int]] = {}  # name: (offset, size, entsize, header offset)
        for i, (name, _, _, _, off, size, _, _, _, entsize) in enumerate(heads):
            at = shoff + 64 * i
            if i == 0 or i == shstrndx:
                continue
            end = strtab.find(b"\0", name, name + 256)
            if name >= len(strtab) or end < 0:
                raise self.bad(at, "sh_name", f"{name}: outside .shstrtab ({len(strtab)} bytes)")
            label = strtab[name:end].decode("latin-1")
            self._span(off, size, f"sh_offset/sh_size of section {i} ({label[:32]})")
            if label in self.sections:
                raise self.bad(at, "sh_name", f"a second {label[:32]} section")
            self.sections[label] = (off, size, entsize, at)
        for need in (".note.Xen", ".xen_prstatus", ".xen_pages"):
            if need not in self.sections:
                raise self.bad(shoff, "section headers", f"no {need} section: not an xl dump-core file")
        self._notes()
        self._vcpus()
        self._pages()

    def _notes(self) -> None:
        off, size, _, at = self.sections[".note.Xen"]
        if size > MAX_NOTES_BYTES:
            raise self.bad(at + 32, "sh_size of .note.Xen", f"{size} bytes")
        notes, pos = self._span(off, size, ".note.Xen"), 0
        header = version = None
        while pos + 12 <= len(notes):
            namesz, descsz, kind = struct.unpack_from("<III", notes, pos)
            name_at = pos + 12
            desc_at = name_at + (namesz + 3) // 4 * 4
            end = desc_at + (descsz + 3) // 4 * 4
            if end > len(notes):
                raise self.bad(off + pos, "a .note.Xen note", f"namesz {namesz}, descsz {descsz}: past the section")
            if notes[name_at:name_at + namesz].rstrip(b"\0") == b"Xen":
                if kind == XEN_ELFNOTE_DUMPCORE_HEADER:
                    header = (off + desc_at, notes[desc_at:desc_at + descsz])
                elif kind == XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION:
                    version = (off + desc_at, notes[desc_at:desc_at + descsz])
            pos = end
        if header is None or len(header[1]) < 32:
            raise self.bad(off, ".note.Xen", "no dump-core header note (XEN_ELFNOTE_DUMPCORE_HEADER, 32 bytes)")
        at, desc = header
        magic, nr_vcpus, nr_pages, page_size = struct.unpack_from("<QQQQ", desc)
        if magic not in (XC_CORE_MAGIC, XC_CORE_MAGIC_HVM):
            raise self.bad(at, "xch_magic", f"{magic:#x}, neither {XC_CORE_MAGIC:#x} (PV) nor {XC_CORE_MAGIC_HVM:#x}"
                           " (HVM)")
        if not 0 < nr_vcpus <= MAX_VCPUS:
            raise self.bad(at + 8, "xch_nr_vcpus", f"{nr_vcpus}: a domain has 1 to {MAX_VCPUS}")
        if page_size != abi.PAGE_SIZE:
            raise self.bad(at + 24, "xch_page_size", f"{page_size}, not {abi.PAGE_SIZE}")
        if nr_pages > self.size // abi.PAGE_SIZE:
            raise self.bad(at + 16, "xch_nr_pages", f"{nr_pages} pages do not fit in {self.size} bytes")
        if version is not None and len(version[1]) >= 8 and struct.unpack_from("<Q", version[1])[0] >> 32:
            raise self.bad(version[0], "format version", f"major {struct.unpack_from('<Q', version[1])[0] >> 32}: "
                           "this reader knows major version 0 (docs/misc/dump-core-format.txt)")
        self.hvm, self.nr_vcpus, self.nr_pages = magic == XC_CORE_MAGIC_HVM, nr_vcpus, nr_pages

    def _vcpus(self) -> None:
        off, size, entsize, at = self.sections[".xen_prstatus"]
        entsize = entsize or VCPU_CONTEXT_SIZE
        if not CTRLREG + 40 <= entsize <= 1 << 16:
            raise self.bad(at + 56, "sh_entsize of .xen_prstatus", f"{entsize}: not an x86-64 vcpu_guest_context "
                           f"({VCPU_CONTEXT_SIZE} bytes)")
        if size != entsize * self.nr_vcpus:
            raise self.bad(at + 32, "sh_size of .xen_prstatus", f"{size} bytes, not {self.nr_vcpus} vCPU "
                           f"context(s) of {entsize}")
        self.cr: list[tuple[int, int, int]] = []  # (CR0, CR3, CR4) per vCPU
        for v in range(self.nr_vcpus):
            regs = struct.unpack_from("<5Q", self.m, off + v * entsize + CTRLREG)
            self.cr.append((regs[0], regs[3], regs[4]))
        self.cr_at = [off + v * entsize + CTRLREG for v in range(self.nr_vcpus)]

    def _pages(self) -> None:
        off, size, _, at = self.sections[".xen_pages"]
        if size != self.nr_pages * abi.PAGE_SIZE:
            raise self.bad(at + 32, "sh_size of .xen_pages", f"{size} bytes, not xch_nr_pages {self.nr_pages} x "
                           f"{abi.PAGE_SIZE}")
        self.pages_at = off
        table, width = (".xen_pfn", 8) if self.hvm else (".xen_p2m", 16)
        other = ".xen_p2m" if self.hvm else ".xen_pfn"
        if table not in self.sections:
            raise self.bad(at, "section headers", f"a {'HVM' if self.hvm else 'PV'} dump-core file without {table}")
        if other in self.sections:
            raise self.bad(self.sections[other][3], "sh_name", f"both {table} and {other}")
        toff, tsize, _, tat = self.sections[table]
        if tsize != self.nr_pages * width:
            raise self.bad(tat + 32, f"sh_size of {table}", f"{tsize} bytes, not xch_nr_pages {self.nr_pages} x "
                           f"{width}")
        self.table_at = toff
        # HVM: page i holds GFN pfns[i], ascending (bisected); PV: page i holds (pfn, MFN), and the page tables
        # name MFNs, so a dict from MFN to page index, one entry per page
        self.by_mfn: dict[int, int] = {}
        last = -1
        entries = struct.iter_unpack("<Q" if self.hvm else "<QQ", self.m[toff: toff + tsize])
        for i, entry in enumerate(entries):
            pfn, mfn = entry[0], entry[-1]
            if pfn == INVALID:
                last = INVALID
                continue
            if pfn <= last:
                raise self.bad(toff + width * i, f"{table}[{i}]", f"pfn {pfn:#x} after {last:#x}: the entries must "
                               "ascend (docs/misc/dump-core-format.txt)")
            last = pfn
            if not self.hvm and mfn != INVALID:
                self.by_mfn.setdefault(mfn, i)

    def frame(self, number: int) -> bytes | None:
        """The page whose frame is ``number`` (a GFN on HVM, an MFN on PV), or None if the file has none."""
        if self.hvm:
            lo, hi = 0, self.nr_pages
            while lo < hi:  # bisection over .xen_pfn in place: no copy of a table as long as the guest's RAM
                mid = (lo + hi) // 2
                if struct.unpack_from("<Q", self.m, self.table_at + 8 * mid)[0] < number:
                    lo = mid + 1
                else:
                    hi = mid
            if lo == self.nr_pages or struct.unpack_from("<Q", self.m, self.table_at + 8 * lo)[0] != number:
                return None
            i = lo
        else:
            i = self.by_mfn.get(number)
            if i is None:
                return None
        return self.m[self.pages_at + i * abi.PAGE_SIZE: self.pages_at + (i + 1) * abi.PAGE_SIZE]

    def shared_info(self) -> bytes | None:
        if ".xen_shared_info" not in self.sections:
            return None
        off, size, _, at = self.sections[".xen_shared_info"]
        if size > abi.PAGE_SIZE:
            raise self.bad(at + 32, "sh_size of .xen_shared_info", f"{size} bytes: more than a page")
        return self.m[off: off + size].ljust(abi.PAGE_SIZE, b"\0")

    def walker(self, vcpu: int, user_half: bool = False):
        """``translate(va)`` through vCPU ``vcpu``'s 4-level page tables (CR3 from .xen_prstatus)."""
        cr0, cr3, cr4 = self.cr[vcpu]
        at = self.cr_at[vcpu]
        if self.hvm and not cr0 & CR0_PG:
            raise self.bad(at, f"vCPU {vcpu}'s CR0", f"{cr0:#x}: paging off (no kernel running?)")
        if self.hvm and not cr4 & CR4_PAE or cr4 & CR4_LA57:
            raise self.bad(at + 32, f"vCPU {vcpu}'s CR4", f"{cr4:#x}: not 4-level paging (PAE on, LA57 off)")
        root = (cr3 & PTE_FRAME & ~(PTI_USER if user_half else 0)) >> 12

        def translate(va: int) -> int | None:
            frame = root
            for level, shift in enumerate((39, 30, 21, 12)):
                table = self.frame(frame)
                if table is None:
                    return None
                pte, = struct.unpack_from("<Q", table, 8 * (va >> shift & 511))
                if not pte & PTE_PRESENT:
                    return None
                frame = (pte & PTE_FRAME) >> 12
                if level in (1, 2) and pte & PTE_PSE:  # a 1 GiB or 2 MiB page
                    return (frame & ~((1 << (shift - 12)) - 1)) + (va >> 12 & ((1 << (shift - 12)) - 1))
            return frame

        return translate


class DumpCoreSource(MemorySource):
    """A guest's kernel in an ``xl dump-core`` file: its FIFO queues with Linux's local heads, or its 2-level
    bitmaps, read through its own page tables as dom0 reads a live guest; and any kernel symbol's bytes."""

    kind = "an xl dump-core file"

    def __init__(self, path: str, system_map: str, kaslr_offset: int | None = None, domain: int = 0):
        self.path, self.system_map, self.kaslr_offset, self.domain = path, system_map, kaslr_offset, domain

    def _readers(self, core: DumpCore):
        """A reader per distinct page-table root, at most MAX_ROOTS (each may cost the 512 probes of a KASLR
        search).  An HVM vCPU caught in user mode under PTI has the user half of its PGD pair in CR3: the kernel
        half, 4 KiB below, is tried next."""
        roots: set[int] = set()
        for vcpu in range(core.nr_vcpus):
            cr3 = core.cr[vcpu][1] & PTE_FRAME
            if not cr3 or cr3 in roots:
                continue
            if len(roots) == MAX_ROOTS:
                return
            roots.add(cr3)
            for user_half in (False, True) if core.hvm else (False,):
                yield PagedKernel(core.walker(vcpu, user_half), core.frame, f"{self.path} (vCPU {vcpu}'s page tables)")

    def _kernel(self, core: DumpCore, names=WANTED):
        syms = read_system_map(self.system_map, names)
        km, slide = locate_kernel(self._readers(core), syms, self.kaslr_offset, self.system_map,
                                  f"the kernel in {self.path}")
        return km, slid(syms, slide), slide

    def image(self) -> EventImage:
        with DumpCore(self.path) as core:
            km, run, slide = self._kernel(core)
            cpus = guest_cpus(km, run, core.nr_vcpus)
            mem, what, known = read_guest(km, run, cpus, self.system_map, core.shared_info())
        source = (f"xl dump-core file {self.path} ({'HVM' if core.hvm else 'PV'}, {self.system_map}, "
                  f"{slide_text(slide, self.kaslr_offset is not None)}, {what})")
        limit = abi.EVTCHN_2L_NR_CHANNELS if known is not None else None
        return EventImage(mem, self.domain, source, guest_known=True, max_ports=limit, vcpu_known=known)

    def read_symbol(self, name: str, size: int, offset: int = 0) -> bytes:
        with DumpCore(self.path) as core:
            km, run, _ = self._kernel(core, WANTED | {name})
            return symbol_bytes(km, run, name, size, offset, self.system_map)
