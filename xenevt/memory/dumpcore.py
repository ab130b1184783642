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
and offset is checked by arithmetic against the file's size and only what is
asked is read (pread, never a mapping or a copy of a section), so a file
costs the pages read plus, on PV, a compact MFN index; each lookup costs a
bisection or a hash probe, and opening a file time linear in its page count.
"""

from __future__ import annotations

import os
import struct
from array import array

from .. import abi
from ..errors import open_input
from ..safetext import term_bytes
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
TABLE_CHUNK = 1 << 20  # .xen_pfn / .xen_p2m are read this much at a time
# a PV core's MFN index: per page 8 bytes of MFN and 1.33 to 2.67 slots of 4 bytes (a 4 GiB guest: 16 MiB)


class FrameIndex:
    """MFN -> page number of a PV core, in two flat arrays instead of a dict (some 100 bytes an entry): the MFN
    of each page, and an open-addressing table of page numbers twice as long.  The hash multiplies by a random
    odd number per process, so MFNs a file chose cannot pile into one chain (time stays linear)."""

    def __init__(self, nr_pages: int):
        self.bits = max(4, (nr_pages + nr_pages // 3).bit_length())  # at most 3/4 full
        self.mask = (1 << self.bits) - 1
        self.key = int.from_bytes(os.urandom(8), "little") | 1
        code = "I" if nr_pages < 0xFFFFFFFF else "Q"
        self.mfns = array("Q")
        self.slots = array(code, bytes(array(code).itemsize << self.bits))  # page number + 1; 0: empty

    def _slot(self, mfn: int) -> int:
        return (mfn * self.key & 0xFFFFFFFFFFFFFFFF) >> (64 - self.bits)

    def add(self, mfn: int, page: int) -> None:
        """Page ``page`` holds ``mfn`` (called with ascending pages; the first page of an MFN is kept)."""
        while len(self.mfns) < page:
            self.mfns.append(INVALID)
        self.mfns.append(mfn)
        slots, mask, s = self.slots, self.mask, self._slot(mfn)
        while slots[s]:
            if self.mfns[slots[s] - 1] == mfn:
                return
            s = (s + 1) & mask
        slots[s] = page + 1

    def get(self, mfn: int) -> int | None:
        slots, mask, s = self.slots, self.mask, self._slot(mfn)
        while slots[s]:
            if self.mfns[slots[s] - 1] == mfn:
                return slots[s] - 1
            s = (s + 1) & mask
        return None


class DumpCore:
    """The sections of one dump-core file, checked, and its pages by frame number.

    Nothing is mapped or copied whole: offsets are checked by arithmetic against the file's size, and each
    read is a pread of what is asked (a page, a table entry, a vCPU's control registers), so a 4 GiB guest's
    file costs the pages read, not its size (no address space either: a reader under a memory limit works).
    The one thing kept per page is a PV core's MFN index (FrameIndex: some 16 bytes per guest page)."""

    def __init__(self, path: str):
        self.path = path
        self.f = open_input(path, "xl dump-core file", MemoryUnavailable)
        try:
            self.fd = self.f.fileno()
            self.size = os.fstat(self.fd).st_size
            if self.size < 64:
                raise self.bad(0, "e_ident", f"{self.size} bytes: too short for an ELF header")
            self._parse()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> DumpCore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def bad(self, offset: int, field: str, why: str) -> KernelReadError:
        return KernelReadError(f"{self.path}, offset {offset:#x}, {field}: {why}")

    def _check(self, offset: int, size: int, field: str) -> None:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise self.bad(offset, field, f"{size} bytes at {offset:#x} run past the end of the file ({self.size} "
                           "bytes)")

    def _read(self, offset: int, size: int, field: str) -> bytes:
        """``size`` bytes at ``offset``, checked against the size the file had when opened."""
        self._check(offset, size, field)
        try:
            data = os.pread(self.fd, size, offset)
        except OSError as e:
            raise self.bad(offset, field, f"cannot read: {(e.strerror or str(e)).lower()}") from None
        if len(data) != size:  # only if the file shrank since it was opened
            raise self.bad(offset, field, f"{len(data)} of {size} bytes: the file shrank while being read")
        return data

    def _parse(self) -> None:
        h = self._read(0, 64, "e_ident")
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
        table = self._read(shoff, 64 * shnum, "the section header table")
        heads = [struct.unpack_from("<IIQQQQIIQQ", table, 64 * i) for i in range(shnum)]
        st = heads[shstrndx]
        if st[5] > MAX_NOTES_BYTES:
            raise self.bad(shoff + 64 * shstrndx + 32, "sh_size of .shstrtab", f"{st[5]} bytes")
        strtab = self._read(st[4], st[5], "sh_offset/sh_size of .shstrtab")
        self.sections: dict[str, tuple[int, int, int, int]] = {}  # name: (offset, size, entsize, header offset)
        for i, (name, _, _, _, off, size, _, _, _, entsize) in enumerate(heads):
            at = shoff + 64 * i
            if i == 0 or i == shstrndx:
                continue
            end = strtab.find(b"\0", name, name + 256)
            if name >= len(strtab) or end < 0:
                raise self.bad(at, "sh_name", f"{name}: outside .shstrtab ({len(strtab)} bytes)")
            raw = strtab[name:end]
            shown = term_bytes(raw[:32])  # the file chose it: escaped before any terminal sees it
            self._check(off, size, f"sh_offset/sh_size of section {i} ({shown})")
            label = raw.decode("latin-1")
            if label in self.sections:
                raise self.bad(at, "sh_name", f"a second {shown} section")
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
        notes, pos = self._read(off, size, ".note.Xen"), 0
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
        self.cr_at = [off + v * entsize + CTRLREG for v in range(self.nr_vcpus)]
        self.cr: list[tuple[int, int, int]] = []  # (CR0, CR3, CR4) per vCPU: 40 bytes read of each context
        for v, cr_at in enumerate(self.cr_at):
            regs = struct.unpack("<5Q", self._read(cr_at, 40, f"vCPU {v}'s control registers"))
            self.cr.append((regs[0], regs[3], regs[4]))

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
        # HVM: page i holds GFN pfns[i], ascending (bisected in the file); PV: page i holds (pfn, MFN), and the
        # page tables name MFNs, so an index from MFN to page number.  The table is read in chunks, once.
        self.by_mfn = None if self.hvm else FrameIndex(self.nr_pages)
        last, i = -1, 0
        step = TABLE_CHUNK // width * width
        for chunk_at in range(toff, toff + tsize, step):
            chunk = self._read(chunk_at, min(step, toff + tsize - chunk_at), table)
            for entry in struct.iter_unpack("<Q" if self.hvm else "<QQ", chunk):
                pfn = entry[0]
                if pfn == INVALID:
                    last = INVALID
                elif pfn <= last:
                    raise self.bad(toff + width * i, f"{table}[{i}]", f"pfn {pfn:#x} after {last:#x}: the entries "
                                   "must ascend (docs/misc/dump-core-format.txt)")
                else:
                    last = pfn
                    if self.by_mfn is not None and entry[1] != INVALID:
                        self.by_mfn.add(entry[1], i)
                i += 1

    def _pfn(self, i: int) -> int:
        return struct.unpack("<Q", self._read(self.table_at + 8 * i, 8, f".xen_pfn[{i}]"))[0]

    def frame(self, number: int) -> bytes | None:
        """The page whose frame is ``number`` (a GFN on HVM, an MFN on PV), or None if the file has none."""
        if self.by_mfn is None:
            lo, hi = 0, self.nr_pages
            while lo < hi:  # bisection over .xen_pfn in the file: 8 bytes read a step, no copy of the table
                mid = (lo + hi) // 2
                if self._pfn(mid) < number:
                    lo = mid + 1
                else:
                    hi = mid
            if lo == self.nr_pages or self._pfn(lo) != number:
                return None
            i = lo
        else:
            at = self.by_mfn.get(number)
            if at is None:
                return None
            i = at
        return self._read(self.pages_at + i * abi.PAGE_SIZE, abi.PAGE_SIZE, f".xen_pages[{i}]")

    def shared_info(self) -> bytes | None:
        if ".xen_shared_info" not in self.sections:
            return None
        off, size, _, at = self.sections[".xen_shared_info"]
        if size > abi.PAGE_SIZE:
            raise self.bad(at + 32, "sh_size of .xen_shared_info", f"{size} bytes: more than a page")
        return self._read(off, size, ".xen_shared_info").ljust(abi.PAGE_SIZE, b"\0")

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
