"""Lays a Linux guest's kernel memory out as dom0 sees it: frames, 4-level page tables, a System.map, and an
``xl dump-core`` file of it.

The kernel's event-channel state comes from tests/kcore_writer.py's layout (the
same bytes ``--self`` reads through kcore), placed in guest frames: the direct
map at PAGE_OFFSET + physical address, the kernel image at its link-time
address plus a KASLR ``slide`` (the System.map keeps link-time addresses;
per-CPU symbols are offsets, never slid).  ``pv``: frames are MFNs, not the
pfns (the page tables and the dump's .xen_p2m say MFNs), and shared_info is
Xen's page mapped at a fixmap address, outside guest RAM (its frame named by
start_info; the dump keeps it in .xen_shared_info).  A reader under test gets
only the frames, each vCPU's CR3 and the System.map, so a passing test means it
walked the tables and followed the pointers as on a real guest.
"""

from __future__ import annotations

import struct
from array import array

from tests import kcore_writer
from xenevt import abi

PAGE = abi.PAGE_SIZE
PAGE_OFFSET = 0xFFFF888000000000      # the direct map (no memory randomisation here)
TEXT = 0xFFFFFFFF81000000             # _text at link time; linux_banner at its start here
KEXTRA = 0xFFFFFFFF82100000           # __cpu_possible_mask, nr_cpu_ids, xen_start_info (link time)
FIXMAP_SHARED = 0xFFFFFFFFFF5FC000    # where a PV kernel maps shared_info (FIX_PARAVIRT_BOOTMAP's page)
START_INFO = PAGE_OFFSET + 0x9000     # a PV guest's start_info page (direct map)
SHARED_MFN = 0xABCDE                  # PV: Xen's shared_info frame, not guest RAM
MFN_BASE = 0x400000                   # PV: MFN = pfn + this, so a reader taking pfns for MFNs finds nothing
BANNER = b"Linux version 6.1.0-xenevt-test (xenevt@tests) #1 SMP\n\0"
PT_FIRST_PFN = 0x100                  # page-table pages from here
VCPU_CONTEXT_SIZE, CTRLREG = 5168, 4984


class GuestImage:
    """One guest: ``frames`` (frame -> 4 KiB, what privcmd maps), ``cr3`` per vCPU, ``symbols`` (name, link
    address, per-CPU), and for PV ``p2m`` (pfn -> MFN) and ``shared`` (Xen's shared_info page)."""

    def __init__(self, mem, *, slide=0, pv=False, user_mode=(), large_text=True, drop_symbol=None,
                 no_banner=False, **layout_kw):
        self.mem, self.slide, self.pv, self.nr_vcpus = mem, slide, pv, mem.nr_vcpus
        segments, symbols = kcore_writer.layout(mem, slide=slide, **layout_kw)
        self.symbols = [s for s in symbols if s[0] != drop_symbol]
        self.symbols += [("_text", TEXT, False), ("_stext", TEXT + 0x1000, False)]
        if not no_banner:
            self.symbols.append(("linux_banner", TEXT + 0x40, False))
        self.symbols += [("__cpu_possible_mask", KEXTRA, False), ("nr_cpu_ids", KEXTRA + 0x100, False)]
        extra = bytearray(PAGE)
        extra[:8] = ((1 << self.nr_vcpus) - 1).to_bytes(8, "little")
        struct.pack_into("<I", extra, 0x100, self.nr_vcpus)
        text = bytearray(PAGE)
        text[0x40:0x40 + len(BANNER)] = BANNER
        segments = [(v, bytes(b)) for v, b in segments]
        self.shared = None
        l2 = any(n == "HYPERVISOR_shared_info" for n, _, _ in symbols)
        if pv and l2:
            # shared_info leaves the direct map for the fixmap: HYPERVISOR_shared_info points there
            shared_va = kcore_writer.DMAP_SHARED
            self.shared = next(b for v, b in segments if v == shared_va)
            segments = [(v, b) for v, b in segments if v != shared_va]
            kdata_va = kcore_writer.KDATA + slide
            kdata = bytearray(next(b for v, b in segments if v == kdata_va))
            struct.pack_into("<Q", kdata, kcore_writer.L2_SYM["HYPERVISOR_shared_info"] - kcore_writer.KDATA,
                             FIXMAP_SHARED)
            segments = [(v, bytes(kdata) if v == kdata_va else b) for v, b in segments]
            info = bytearray(PAGE)
            info[:14] = b"xen-3.0-x86_64"
            struct.pack_into("<QQ", info, 32, mem.nr_vcpus * 0, SHARED_MFN * PAGE)  # nr_pages, shared_info
            segments.append((START_INFO, bytes(info)))
            struct.pack_into("<Q", extra, 0x200, START_INFO)
            self.symbols.append(("xen_start_info", KEXTRA + 0x200, False))
        segments += [(TEXT + slide, bytes(text)), (KEXTRA + slide, bytes(extra))]
        # guest RAM: each page's pfn from its address (direct map: its physical address; image: 16 MiB up)
        self.ram: dict[int, bytes] = {}   # pfn -> page
        self.pages: dict[int, int] = {}   # page va -> pfn
        for va, blob in segments:
            for i in range(0, len(blob), PAGE):
                page_va = va + i
                pfn = ((page_va - PAGE_OFFSET) if page_va < 0xFFFF_FFFF_0000_0000 else
                       (page_va - (TEXT + slide) + (16 << 20))) // PAGE
                self.ram[pfn] = blob[i:i + PAGE].ljust(PAGE, b"\0")
                self.pages[page_va] = pfn
        self._next_pt = PT_FIRST_PFN
        self._tables: dict[int, bytearray] = {}  # pfn -> page-table page
        pgd = self._table()
        user_pgd = self._table()  # PTI's user half: maps nothing of the kernel's data
        assert user_pgd == pgd + 1
        for va, pfn in self.pages.items():
            if large_text and TEXT + slide <= va < TEXT + slide + (2 << 20):
                self._map(pgd, va, pfn, large=True)
            else:
                self._map(pgd, va, pfn)
        if self.shared is not None:
            self._map(pgd, FIXMAP_SHARED, None, frame=SHARED_MFN)
        for pfn, table in self._tables.items():
            self.ram[pfn] = bytes(table)
        self.cr3 = [self.frame_of(pgd + (1 if v in user_mode else 0)) << 12 for v in range(self.nr_vcpus)]
        self.p2m = {pfn: self.frame_of(pfn) for pfn in sorted(self.ram)}
        self.frames = {self.frame_of(pfn): page for pfn, page in self.ram.items()}

    def frame_of(self, pfn: int) -> int:
        return pfn + MFN_BASE if self.pv else pfn

    def _table(self) -> int:
        pfn = self._next_pt
        self._next_pt += 1
        self._tables[pfn] = bytearray(PAGE)
        return pfn

    def _map(self, pgd: int, va: int, pfn: int | None, *, large=False, frame=None) -> None:
        table = pgd
        for shift in (39, 30, 21) if not large else (39, 30):
            i = va >> shift & 511
            pte, = struct.unpack_from("<Q", self._tables[table], 8 * i)
            if not pte & 1:
                nxt = self._table()
                struct.pack_into("<Q", self._tables[table], 8 * i, self.frame_of(nxt) << 12 | 0x63)
                table = nxt
            else:
                table = next(p for p in self._tables if self.frame_of(p) == pte >> 12)
        if large:  # a 2 MiB page: the PDE names the first frame of the 2 MiB-aligned run holding pfn
            base = pfn - (va >> 12 & 511)
            struct.pack_into("<Q", self._tables[table], 8 * (va >> 21 & 511), self.frame_of(base) << 12 | 0xE3)
            return
        f = frame if frame is not None else self.frame_of(pfn)
        struct.pack_into("<Q", self._tables[table], 8 * (va >> 12 & 511), f << 12 | 0x63)

    # --- what dom0 sees ------------------------------------------------------------------------------------
    def translate(self, vcpu: int, va: int) -> int | None:
        """The frame behind ``va`` in vCPU ``vcpu``'s tables (as xc_translate_foreign_address), or None."""
        frame = self.cr3[vcpu] >> 12
        for level, shift in enumerate((39, 30, 21, 12)):
            page = self.frames.get(frame)
            if page is None:
                return None
            pte, = struct.unpack_from("<Q", page, 8 * (va >> shift & 511))
            if not pte & 1:
                return None
            frame = (pte & 0x000FFFFFFFFFF000) >> 12
            if level == 2 and pte & 0x80:
                return frame + (va >> 12 & 511)
        return frame

    def map_frame(self, frame: int) -> bytes | None:
        """A frame as privcmd maps it: RAM the dump-core file leaves out (the rest of the text's 2 MiB page)
        reads as zeros."""
        if self.pv and frame == SHARED_MFN:
            return self.shared
        if frame not in self.frames and self.frame_of(0x1000) <= frame < self.frame_of(0x1000) + 512:
            return bytes(PAGE)
        return self.frames.get(frame)

    def system_map(self, path, hide_percpu_start=False) -> str:
        lines = [(a, "d" if pc else "D", n) for n, a, pc in self.symbols]
        lines += [(0, "D", "__per_cpu_start"), (0x20000, "D", "__per_cpu_end"), (TEXT + 0x2000, "T", "xen_hypercall"),
                  (0xFFFFFFFF81234567, "t", "some_static_fn")]
        with open(path, "w") as f:
            for a, t, n in sorted(lines):
                f.write(f"{a:016x} {t} {n}\n")
        return str(path)

    def vmlinux(self, path) -> str:
        """The kernel's symbols as a vmlinux ELF carries them: .symtab and the .strtab it links to, nothing else."""
        strtab, syms = b"\0", bytes(24)
        for name, addr, _ in self.symbols:
            syms += struct.pack("<IBBHQQ", len(strtab), 0x11, 0, 1, addr, 8)  # STB_GLOBAL | STT_OBJECT
            strtab += name.encode() + b"\0"
        data_at = 64 + 64 * 3
        shdrs = bytes(64) + struct.pack("<IIQQQQIIQQ", 0, 2, 0, 0, data_at, len(syms), 2, 1, 8, 24)
        shdrs += struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, data_at + len(syms), len(strtab), 0, 0, 1, 0)
        ehdr = bytearray(64)
        ehdr[:7] = b"\x7fELF\x02\x01\x01"
        struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 2, 62, 1, 0, 0, 64, 0, 64, 0, 0, 64, 3, 0)
        with open(path, "wb") as f:
            f.write(bytes(ehdr) + shdrs + syms + strtab)
        return str(path)

    def dump_core(self, path, *, drop_section=None, no_shared=False, total_pages=None) -> str:
        """An ``xl dump-core`` file of this guest, laid out as tools/libs/guest/xg_core.c writes one.

        ``total_pages``: a guest of that many pages (pfns 0..total_pages-1, each listed in .xen_pfn or
        .xen_p2m), of which only the kernel's are written: .xen_pages is a hole elsewhere, so a 4 GiB guest's
        file takes a few MiB of disk."""
        names = [".shstrtab", ".note.Xen", ".xen_prstatus"]
        if self.shared is not None and not no_shared:
            names.append(".xen_shared_info")
        names += [".xen_pages", ".xen_p2m" if self.pv else ".xen_pfn"]
        strtab = b"\0" + b"".join(n.encode() + b"\0" for n in names)
        name_at = {n: strtab.index(n.encode() + b"\0") for n in names}

        def note(kind, desc):
            return struct.pack("<III", 4, len(desc), kind) + b"Xen\0" + desc

        magic = 0xF00FEBED if self.pv else 0xF00FEBEE
        pfns = sorted(self.ram)
        if total_pages is not None:  # pfns from 0 up, then the kernel's above them (the direct map's high pages)
            high = [p for p in pfns if p >= total_pages - len(pfns)]
            pfns = [*range(total_pages - len(high)), *high]
        notes = (note(0x2000000, b"") + note(0x2000001, struct.pack("<QQQQ", magic, self.nr_vcpus, len(pfns), PAGE))
                 + note(0x2000002, struct.pack("<QQ", 4, 17).ljust(1264, b"\0"))  # Xen 4.17's version note
                 + note(0x2000003, struct.pack("<Q", 1)))  # format version (0, 1)
        ctx = bytearray(VCPU_CONTEXT_SIZE * self.nr_vcpus)
        for v in range(self.nr_vcpus):
            # CR0 (PG, PE), CR3, CR4 (PAE) as Xen reports them; a PV CR3 is xen_pfn_to_cr3(MFN)
            struct.pack_into("<5Q", ctx, v * VCPU_CONTEXT_SIZE + CTRLREG, 0x80050033, 0, 0, self.cr3[v], 0x3006F0)
        # .xen_pages: {page index: page}, written where the index puts it (a hole between)
        pages = {i: self.ram[p] for i, p in enumerate(pfns) if p in self.ram}
        table = array("Q", bytes(8 * (2 if self.pv else 1) * len(pfns)))
        if self.pv:
            table[0::2] = array("Q", pfns)
            table[1::2] = array("Q", (self.frame_of(p) for p in pfns))
        else:
            table[:] = array("Q", pfns)
        table = table.tobytes()
        blobs = {".shstrtab": strtab, ".note.Xen": notes, ".xen_prstatus": bytes(ctx), ".xen_shared_info": self.shared,
                 ".xen_pages": pages, ".xen_p2m": table, ".xen_pfn": table}
        entsize = {".xen_prstatus": VCPU_CONTEXT_SIZE, ".xen_shared_info": PAGE, ".xen_p2m": 16, ".xen_pfn": 8}
        kept = [n for n in names if n != drop_section]
        at = 64 + 64 * (len(kept) + 1)
        headers = [bytes(64)]
        placed = []  # (offset, blob)
        for n in kept:
            blob = blobs[n]
            size = len(pfns) * PAGE if n == ".xen_pages" else len(blob)
            if n == ".xen_pages":  # page aligned, as xg_core.c pads it
                at += -at % PAGE
            kind = 3 if n == ".shstrtab" else 7 if n == ".note.Xen" else 1
            headers.append(struct.pack("<IIQQQQIIQQ", name_at[n], kind, 0, 0, at, size, 0, 0, 8,
                                       entsize.get(n, 0)))
            placed += ([(at + i * PAGE, page) for i, page in blob.items()] if n == ".xen_pages" else [(at, blob)])
            at += size
        ehdr = bytearray(64)
        ehdr[:7] = b"\x7fELF\x02\x01\x01"
        struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 4, 62, 1, 0, 0, 64, 0, 64, 0, 0, 64, len(headers),
                         1 if ".shstrtab" in kept else 0)
        with open(path, "wb") as f:
            f.write(bytes(ehdr) + b"".join(headers))
            for offset, blob in placed:
                f.seek(offset)
                f.write(blob)
            f.truncate(at)  # the file ends where its last section does, a hole up to there if need be
        return str(path)


class FakeXen:
    """A backend over one guest as dom0's privcmd and libxenctrl see it: translate_address walks the guest's
    tables, map_frames copies its frames, getdomaininfo gives its vCPU count."""

    name = "xen"

    def __init__(self, guest: GuestImage, domain: int = 5):
        self.guest, self.domain = guest, domain
        self.translations = 0

    def domains(self):
        return [0, self.domain]

    def shared_info_frame(self, domain):
        return SHARED_MFN, self.guest.nr_vcpus

    def translate_address(self, domain, vcpu, virt):
        assert domain == self.domain
        self.translations += 1
        return self.guest.translate(vcpu, virt)

    def map_frames(self, domain, frames):
        from xenevt.errors import channel_error

        out = []
        for f in frames:
            page = self.guest.map_frame(f)
            if page is None:
                raise channel_error(f"map frame {f:#x} of", 22, "not a frame this domain may map", domain=domain)
            out.append(page)
        return out

    def channels(self, domain):
        return None


def sparse_guest_mem():
    """The event-channel memory of sparse_core's guest: two vCPUs, a queue with a stale head, a masked port."""
    from tests import writer

    return writer.domain(nr_vcpus=2, pages=2, ports={5: "P->9", 9: "PL->12", 12: "PL", 3: "PL", 7: "PM"},
                         heads={(0, 7): 5}, ready={0: 1 << 7})


def sparse_core(directory, *, gib: int = 4, pv: bool = False, slide: int = 0x1A400000) -> tuple[str, str]:
    """(core, System.map) of a FIFO guest of ``gib`` GiB in ``directory``: .xen_pages a hole but for the kernel's
    pages, so a multi-GiB core costs a few MiB of disk (what the memory test and bench/bench_dumpcore.py read)."""
    import pathlib

    g = GuestImage(sparse_guest_mem(), slide=slide, pv=pv)
    d = pathlib.Path(directory)
    return (g.dump_core(d / "core", total_pages=(gib << 30) // PAGE), g.system_map(d / "System.map"))
