"""The memory source "a guest's kernel, from dom0": another domain's Linux, read with no help from it.

dom0 maps the guest's frames through privcmd (libxenforeignmemory) and learns
which frame backs a kernel virtual address by walking the guest's page tables
for one of its vCPUs (libxenctrl's xc_translate_foreign_address: an MFN on
PV, a GFN on HVM, either what privcmd maps).  Where Linux keeps its event
channels comes from the guest kernel's System.map (or a vmlinux's symbol
table): link-time addresses, so a KASLR kernel's slide is found by reading
``linux_banner`` where each possible slide would put it, or given.  Per-CPU
symbols are offsets (x86-64 links them at 0) added to ``__per_cpu_offset[]``
read from the guest, as ``linux`` does for --self.  ``PagedKernel``,
``find_slide`` and ``read_guest`` serve the dump-core source too, over its
own walk of the file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from .. import abi
from ..errors import BackendUnavailable, MiB, cap_text, open_input
from .base import EventImage, MemoryBackend, MemoryUnavailable, read_twice
from .linux import (
    ABI_SYMBOLS,
    L2_NEEDED,
    MAX_FIFO_CPUS,
    MAX_SYMBOL_TEXT,
    NEEDED,
    KernelReadError,
    check_l2_symbols,
    read_image,
    symbol_lines,
    uses_2l,
)
from .live import LiveSource

KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map (arch/x86/include/asm/page_64_types.h)
KERNEL_IMAGE_SIZE = 1 << 30      # KASLR puts the image somewhere in [__START_KERNEL_map, +1 GiB)
SLIDE_STEP = 2 << 20             # and moves it in 2 MiB steps (CONFIG_PHYSICAL_ALIGN is at least that)
BANNER = b"Linux version "       # what linux_banner starts with (init/version.c)
GUEST_SYMBOLS = ("linux_banner", "__cpu_possible_mask", "nr_cpu_ids")
WANTED = frozenset(NEEDED + ABI_SYMBOLS + L2_NEEDED + GUEST_SYMBOLS)
MAX_VCPU_TRIES = 8               # vCPUs whose page tables are tried for the kernel
KSYM_NAME_LEN = 512              # Linux's longest symbol name (include/linux/kallsyms.h)
# a vmlinux (some 500 MiB with debug info) is read in its .symtab (24 bytes a symbol, streamed) and .strtab (held):
# a kernel has at most some 1.5 million symbols, 40 MiB and 60 MiB; allyesconfig's are within these caps
MAX_SYMTAB_BYTES = 256 * MiB
MAX_STRTAB_BYTES = 128 * MiB
SYMTAB_CHUNK = 24 << 16
_HEX = frozenset("0123456789abcdefABCDEF")


def read_system_map(path: str, names=WANTED) -> dict[str, int]:
    """The link-time addresses of ``names`` from a System.map ("ADDRESS TYPE NAME" lines) or a vmlinux ELF's
    symbol table; other symbols are skipped, so the cost is one pass over the file."""
    with open_input(path, "System.map", MemoryUnavailable) as f:
        try:
            head = f.read(4)
            f.seek(0)
            if head == b"\x7fELF":
                return _elf_symbols(f, path, frozenset(names))
            return _map_symbols(f, path, frozenset(names))
        except OSError as e:
            raise MemoryUnavailable(f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None


def _map_symbols(f, path: str, want) -> dict[str, int]:
    if os.fstat(f.fileno()).st_size > MAX_SYMBOL_TEXT:  # refused unread (symbol_lines counts what it reads too)
        raise KernelReadError(f"{path}: larger than the {cap_text(MAX_SYMBOL_TEXT)} cap of a System.map")
    found: dict[str, int] = {}
    lines = 0
    for n, parts in symbol_lines(f, path):
        if not parts:
            continue
        lines += 1
        if len(parts) < 3 or not 0 < len(parts[0]) <= 16 or not _HEX.issuperset(parts[0].decode("latin-1")) \
                or len(parts[1]) != 1:
            raise KernelReadError(f"{path}, line {n}: not a System.map line (ADDRESS TYPE NAME)")
        name = parts[2].decode("latin-1")
        if name in want:
            found.setdefault(name, int(parts[0], 16))
    if not lines:
        raise KernelReadError(f"{path}: an empty System.map")
    return found


def _elf_symbols(f, path: str, want) -> dict[str, int]:
    """A vmlinux's .symtab (ELF64 little-endian), names from the string table it links to."""
    hdr = f.read(64)
    if len(hdr) < 64 or hdr[4] != 2 or hdr[5] != 1:
        raise KernelReadError(f"{path}: not a 64-bit little-endian ELF (a vmlinux)")
    shoff, = struct.unpack_from("<Q", hdr, 40)
    shentsize, shnum = struct.unpack_from("<HH", hdr, 58)
    if shentsize != 64 or not 0 < shnum <= 4096:
        raise KernelReadError(f"{path}, offset 58: bad section header table ({shnum} x {shentsize} bytes)")
    table = _read_at(f, path, shoff, 64 * shnum, "the section header table")
    sections = [struct.unpack_from("<IIQQQQIIQQ", table, 64 * i) for i in range(shnum)]
    symtab = next((s for s in sections if s[1] == 2), None)  # SHT_SYMTAB
    if symtab is None:
        raise KernelReadError(f"{path}: this ELF has no symbol table (.symtab): give the System.map")
    if symtab[6] >= shnum:
        raise KernelReadError(f"{path}: .symtab links to section {symtab[6]} of {shnum}")
    strtab = sections[symtab[6]]
    for what, size, cap in (("the symbol table", symtab[5], MAX_SYMTAB_BYTES),
                            ("its string table", strtab[5], MAX_STRTAB_BYTES)):
        if size > cap:
            raise KernelReadError(f"{path}: {what} claims {size} bytes, over the {cap_text(cap)} cap")
    strs = _read_at(f, path, strtab[4], strtab[5], "the symbol string table")
    found: dict[str, int] = {}
    usable = symtab[5] // 24 * 24
    for chunk_at in range(0, usable, SYMTAB_CHUNK):
        syms = _read_at(f, path, symtab[4] + chunk_at, min(SYMTAB_CHUNK, usable - chunk_at), "the symbol table")
        for st_name, _, _, _, value, _ in struct.iter_unpack("<IBBHQQ", syms):
            end = strs.find(b"\0", st_name, st_name + KSYM_NAME_LEN)  # bounded: shared bytes cost no rescans
            if st_name >= len(strs) or end < 0:
                continue
            name = strs[st_name:end].decode("latin-1")
            if name in want:
                found.setdefault(name, value)
    return found


def _read_at(f, path: str, offset: int, size: int, what: str) -> bytes:
    try:
        f.seek(offset)
        data = f.read(size)
    except (OSError, OverflowError, ValueError):
        data = b""
    if len(data) != size:
        raise KernelReadError(f"{path}, offset {offset:#x}: {what} ({size} bytes) runs past the end of the file")
    return data


def slid(syms: dict[str, int], slide: int) -> dict[str, int]:
    """Run-time addresses: the kernel image's symbols moved by the KASLR ``slide``; per-CPU offsets (below the
    image, x86-64 links them at 0) are not."""
    return {n: a + slide if a >= KERNEL_MAP else a for n, a in syms.items()}


class PagedKernel:
    """A guest kernel's virtual memory, page by page: ``translate(va)`` names the frame behind a page (None where
    the page tables map none), ``frame(f)`` gives its 4 KiB (None where the source has none)."""

    def __init__(self, translate: Callable[[int], int | None], frame: Callable[[int], bytes | None], where: str):
        self._translate, self._frame, self.where = translate, frame, where
        self._pages: dict[int, bytes | None] = {}  # as many as the reads (linux's are bounded) ask for

    def _page(self, va: int) -> bytes | None:
        if va not in self._pages:
            f = self._translate(va)
            data = self._frame(f) if f is not None else None
            self._pages[va] = data if data is not None and len(data) == abi.PAGE_SIZE else None
        return self._pages[va]

    def provide(self, addr: int, page: bytes) -> None:
        """The page at ``addr`` is ``page``, whatever the tables say (a page the source holds apart)."""
        if addr % abi.PAGE_SIZE or len(page) != abi.PAGE_SIZE:
            raise KernelReadError(f"a page provided at {addr:#x} is not one aligned page")
        self._pages[addr] = page

    def _bytes(self, addr: int, size: int) -> bytes | None:
        if addr < 0 or size < 0 or addr + size > 1 << 64 or size > 4 * abi.PAGE_SIZE:
            return None
        out = b""
        while len(out) < size:
            at = addr + len(out)
            page = self._page(at & ~(abi.PAGE_SIZE - 1))
            if page is None:
                return None
            off = at & (abi.PAGE_SIZE - 1)
            out += page[off: off + size - len(out)]
        return out

    def mapped(self, addr: int, size: int) -> bool:
        return self._bytes(addr, size) is not None

    def read(self, addr: int, size: int, what: str) -> bytes:
        data = self._bytes(addr, size)
        if data is None:
            raise KernelReadError(f"{what} at {addr:#x} is not mapped in {self.where}")
        return data

    def u32(self, addr: int, what: str) -> int:
        return struct.unpack("<I", self.read(addr, 4, what))[0]

    def u64(self, addr: int, what: str) -> int:
        return struct.unpack("<Q", self.read(addr, 8, what))[0]


def holds_kernel(km, syms: dict[str, int], slide: int) -> bool:
    """Whether the System.map's kernel runs at ``slide`` in ``km``: linux_banner reads "Linux version ", or
    else evtchn_ops points at one of the two ops tables, each moved by the slide."""
    if "linux_banner" in syms:
        at = syms["linux_banner"] + slide
        return km.mapped(at, len(BANNER)) and km.read(at, len(BANNER), "linux_banner") == BANNER
    at = syms["evtchn_ops"] + slide
    return km.mapped(at, 8) and km.u64(at, "evtchn_ops") in (syms["evtchn_ops_fifo"] + slide,
                                                            syms["evtchn_ops_2l"] + slide)


def can_check(syms: dict[str, int]) -> bool:
    return "linux_banner" in syms or all(n in syms for n in ABI_SYMBOLS)


def find_slide(km, syms: dict[str, int]) -> int | None:
    """The KASLR slide of the kernel in ``km``: 0 first (PV and PVH kernels are never moved), then every 2 MiB
    step that keeps the image inside its 1 GiB window; None if no slide holds the kernel.  At most 512 probes,
    each a page-table walk."""
    if holds_kernel(km, syms, 0):
        return 0
    anchor = syms["linux_banner"] if "linux_banner" in syms else syms["evtchn_ops"]
    lo = -((anchor - KERNEL_MAP) // SLIDE_STEP)
    for k in range(lo, lo + KERNEL_IMAGE_SIZE // SLIDE_STEP):
        if k and holds_kernel(km, syms, k * SLIDE_STEP):
            return k * SLIDE_STEP
    return None


def guest_cpus(km, syms: dict[str, int], nr_vcpus: int | None) -> list[int]:
    """The guest's possible CPUs, as its own /sys/devices/system/cpu/possible says them: ``__cpu_possible_mask``
    up to ``nr_cpu_ids`` (else the domain's vCPU count), the dump's first 256."""
    limit = nr_vcpus or MAX_FIFO_CPUS
    if "nr_cpu_ids" in syms:
        limit = km.u32(syms["nr_cpu_ids"], "nr_cpu_ids")
        if not 0 < limit <= 8192:
            raise KernelReadError(f"nr_cpu_ids reads {limit}: not a CPU count (wrong System.map?)")
    limit = min(limit, MAX_FIFO_CPUS)
    if "__cpu_possible_mask" not in syms:
        return list(range(limit))
    bits = int.from_bytes(km.read(syms["__cpu_possible_mask"], (limit + 7) // 8, "__cpu_possible_mask"), "little")
    cpus = [c for c in range(limit) if bits >> c & 1]
    if not cpus:
        raise KernelReadError("__cpu_possible_mask lists no CPU (wrong System.map or KASLR offset?)")
    return cpus


def read_guest(km: PagedKernel, syms: dict[str, int], cpus: list[int], where: str, shared: bytes | None = None):
    """(DomainMemory, what was read, which vCPUs' vcpu_info was read or None for FIFO) of the guest kernel in
    ``km`` with run-time symbols ``syms``: the same reads as --self.  ``shared``: the shared_info page where the
    source keeps it apart (a dump-core file's .xen_shared_info): a PV kernel maps Xen's page, not guest RAM, at
    HYPERVISOR_shared_info."""
    via = ""
    if shared is not None and uses_2l(km, syms):
        check_l2_symbols(syms, where)
        ptr = km.u64(syms["HYPERVISOR_shared_info"], "HYPERVISOR_shared_info")
        if not km.mapped(ptr, abi.PAGE_SIZE):
            km.provide(ptr, shared)
            via = ", shared_info from .xen_shared_info"
    mem, what, known = read_image(km, syms, cpus, where)
    return mem, what + via, known


def slide_text(slide: int, given: bool) -> str:
    return f"KASLR offset {slide:#x}{' as given' if given else ''}" if slide else "no KASLR offset"


def locate_kernel(readers, syms: dict[str, int], kaslr_offset: int | None, system_map: str, where: str):
    """(reader, slide) of the first of ``readers`` (one per vCPU's page tables, made lazily) where the
    System.map's kernel is: at ``kaslr_offset`` if given, else at the slide found."""
    given = kaslr_offset is not None
    if not given and not can_check(syms):
        raise KernelReadError(f"{system_map} has neither linux_banner nor evtchn_ops: cannot find the kernel's "
                              "KASLR offset; give it with --kaslr-offset")
    for km in readers:
        slide = kaslr_offset if given else find_slide(km, syms)
        if slide is not None and (not can_check(syms) or holds_kernel(km, syms, slide)):
            return km, slide
    if given:
        raise KernelReadError(f"{system_map} does not match {where} at --kaslr-offset {kaslr_offset:#x}: "
                              "linux_banner does not read 'Linux version' there (wrong offset, or another kernel's "
                              "System.map?)")
    raise KernelReadError(f"{system_map} does not match {where}: no KASLR offset puts linux_banner on 'Linux "
                          "version'; is it this guest's System.map? (else give --kaslr-offset)")


def symbol_bytes(km, run: dict[str, int], name: str, size: int, offset: int, system_map: str) -> bytes:
    if name not in run:
        raise KernelReadError(f"{name} is not in {system_map}")
    return km.read(run[name] + offset, size, name if not offset else f"{name}+{offset:#x}")


class GuestKernelSource(LiveSource):
    """Domain ``domain``'s Linux, read from dom0 through its page tables: its FIFO queues with Linux's local
    heads, or its 2-level bitmaps with each CPU's vcpu_info and scan position, as its own --self would; and any
    kernel symbol's bytes."""

    def __init__(self, backend: MemoryBackend, domain: int, system_map: str, kaslr_offset: int | None = None):
        super().__init__(backend, domain)
        self.system_map, self.kaslr_offset = system_map, kaslr_offset
        self.kind = f"domain {domain}'s kernel through the {backend.name} backend"

    def _reader(self, vcpu: int) -> PagedKernel:
        b, d = self.backend, self.domain
        return PagedKernel(lambda va: b.translate_address(d, vcpu, va), lambda f: b.map_frames(d, [f])[0],
                           f"domain {d}'s kernel (vCPU {vcpu}'s page tables)")

    def _kernel(self, names=WANTED):
        """(reader, run-time symbols, slide, the domain's vCPU count where known)."""
        syms = read_system_map(self.system_map, names)
        try:
            nr_vcpus = self.backend.shared_info_frame(self.domain)[1]
        except BackendUnavailable:  # (the count is a hint: vCPU 0's page tables are tried without it)
            nr_vcpus = None
        # a vCPU in user mode under PTI walks the user page tables, which lack kernel data: try the next one (a
        # few: each try may cost the 512 probes of a KASLR search)
        tries = min(nr_vcpus or 1, MAX_VCPU_TRIES)
        which = f"vCPUs 0-{tries - 1}" if tries > 1 else "vCPU 0"
        km, slide = locate_kernel((self._reader(v) for v in range(tries)), syms, self.kaslr_offset, self.system_map,
                                  f"domain {self.domain}'s kernel ({which})")
        return km, slid(syms, slide), slide, nr_vcpus

    def image(self) -> EventImage:
        km, run, slide, nr_vcpus = self._kernel()
        cpus = guest_cpus(km, run, nr_vcpus)
        (mem, what, known), settled = read_twice(lambda: read_guest(km, run, cpus, self.system_map),
                                                 lambda got: got[0])  # (a running guest)
        source = (f"domain {self.domain}'s kernel through {self.backend.name} privcmd and its page tables "
                  f"({self.system_map}, {slide_text(slide, self.kaslr_offset is not None)}, {what})")
        limit = abi.EVTCHN_2L_NR_CHANNELS if known is not None else None
        return EventImage(mem, self.domain, source, guest_known=settled, max_ports=limit, vcpu_known=known)

    def read_symbol(self, name: str, size: int, offset: int = 0) -> bytes:
        km, run, _, _ = self._kernel(WANTED | {name})
        return symbol_bytes(km, run, name, size, offset, self.system_map)
