"""The memory source "this kernel": /proc/kallsyms for addresses, /proc/kcore for the memory behind them.

kallsyms gives the symbols' addresses (per-CPU symbols as offsets, see
``linux``), kcore is an ELF core of kernel memory whose PT_LOAD segments say
where each address range lies in the file.  Everything is read, never
written; pointers read from kernel memory are checked against the segments
before they are followed.  Where Linux keeps its FIFO or 2-level state is ``linux``'s
business, so another kernel's memory (from dom0, from a dump-core file)
reuses it with its own reader.  The one page a PV kernel maps outside kcore's
ranges, its shared_info (a Xen page in the fixmap), is read through privcmd
as this domain's own frame, read-only.
"""

from __future__ import annotations

import bisect
import errno
import os
import struct

from .. import abi
from ..errors import BackendUnavailable, open_input, read_input
from .base import CPUS_POSSIBLE, KALLSYMS, KCORE, EventImage, MemorySource, read_twice
from .linux import (
    ABI_SYMBOLS,
    L2_NEEDED,
    L2_PV,
    MAX_FIFO_CPUS,
    NEEDED,
    KernelReadError,
    read_image,
    symbol_lines,
)

PRIVCMD = "/dev/xen/privcmd"
# _IOC(_IOC_NONE, 'P', 4, sizeof(struct privcmd_mmapbatch_v2)): num, dom (u32, u16, pad), addr, arr, err (u64 each)
IOCTL_PRIVCMD_MMAPBATCH_V2 = (32 << 16) | (ord("P") << 8) | 4
PT_LOAD = 1
MAX_CPU_ID = 8192  # Linux's largest NR_CPUS (x86 MAXSMP)
_HEX = frozenset(b"0123456789abcdefABCDEF")
MAX_CPU_LIST = 1 << 16  # "0-8191" is what Linux writes: a file larger than this is not a CPU list
MAX_PHDR_BYTES = 1 << 22  # 65,535 program headers of 56 bytes: /proc/kcore has some dozens

__all__ = ["KernelMemory", "KernelReadError", "KcoreSource", "parse_cpu_list", "read_self", "read_symbols",
           "self_domid"]


def self_domid() -> int | None:
    """This guest's domain id: $XENEVT_SELF_DOMID, dom0 if /proc/xen says control_d, else unknown."""
    env = os.environ.get("XENEVT_SELF_DOMID")
    if env is not None:
        return int(env)
    try:
        with open("/proc/xen/capabilities") as f:
            if "control_d" in f.read():
                return 0
    except OSError:
        pass
    return None


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6] (the format of /sys/devices/system/cpu/possible).

    ASCII digits only, CPU ids below ``MAX_CPU_ID`` (Linux's largest NR_CPUS), so a
    crafted range can never cost more than that many entries."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if not _is_decimal(lo) or (hi and not _is_decimal(hi)):
            raise KernelReadError(f"cannot parse CPU list {text.strip()[:80]!r}")
        first, last = int(lo), int(hi or lo)
        if last >= MAX_CPU_ID or first > last:
            raise KernelReadError(f"CPU range {part[:40]!r} in CPU list: ids run 0..{MAX_CPU_ID - 1}, low to high")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def _is_decimal(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def read_symbols(path: str, names=NEEDED + ABI_SYMBOLS + L2_NEEDED + L2_PV) -> dict[str, int]:
    want = {n.encode() for n in names}
    found: dict[str, int] = {}
    try:
        with open_input(path, "kallsyms", BackendUnavailable, denied="(run as root)") as f:
            for _, parts in symbol_lines(f, path):
                if len(parts) == 3 and parts[2] in want:  # built-in symbols only
                    if not 0 < len(parts[0]) <= 16 or not _HEX.issuperset(parts[0]):
                        raise ValueError(parts[0])
                    found.setdefault(parts[2].decode(), int(parts[0], 16))
    except PermissionError:
        raise BackendUnavailable(f"cannot read {path}: permission denied (run as root)") from None
    except OSError as e:
        raise BackendUnavailable(f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None
    except ValueError:
        raise KernelReadError(f"{path}: not in kallsyms format") from None
    return found


class KernelMemory:
    """Reads kernel virtual addresses out of an ELF core (/proc/kcore or a file laid out like it)."""

    def __init__(self, path: str = KCORE):
        self.path = path
        self.f = open_input(path, "kcore", BackendUnavailable, denied="(run as root)")
        hdr = self.f.read(64)
        if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2 or hdr[5] != 1:
            self.f.close()
            raise KernelReadError(f"{path} is not a 64-bit little-endian ELF core")
        phoff, = struct.unpack_from("<Q", hdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
        if phentsize < 56 or phnum == 0 or phentsize * phnum > MAX_PHDR_BYTES:
            self.f.close()
            raise KernelReadError(f"{path}: bad program header table ({phnum} x {phentsize} bytes)")
        try:
            self.f.seek(phoff)
            table = self.f.read(phentsize * phnum)
        except (OSError, OverflowError, ValueError):  # e_phoff past what lseek takes
            table = b""
        if len(table) < phentsize * phnum:
            self.f.close()
            raise KernelReadError(f"{path}: program header table truncated")
        self.segments = []
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", table, i * phentsize)
            if p_type == PT_LOAD and p_filesz:
                self.segments.append((p_vaddr, p_filesz, p_offset))
        # kcore's ranges do not overlap; sorted, each read looks at one candidate (a crafted file with
        # 65,535 segments costs a bisection per read, not a scan)
        self.segments.sort()
        self._starts = [v for v, _, _ in self.segments]

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> KernelMemory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _segment(self, addr: int, size: int):
        """The segment holding [addr, addr + size): of those starting at or below addr, the last one."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            vaddr, filesz, offset = self.segments[i]
            if addr + size <= vaddr + filesz:
                return vaddr, filesz, offset
        return None

    def mapped(self, addr: int, size: int) -> bool:
        return self._segment(addr, size) is not None

    def read(self, addr: int, size: int, what: str) -> bytes:
        seg = self._segment(addr, size)
        if seg is not None:
            vaddr, _, offset = seg
            try:
                self.f.seek(offset + addr - vaddr)
                data = self.f.read(size)
            except (OSError, OverflowError, ValueError) as e:  # a file offset past what lseek takes
                why = (e.strerror or str(e)).lower() if isinstance(e, OSError) else "file offset out of range"
                raise KernelReadError(f"cannot read {what} at {addr:#x} from {self.path}: {why}") from None
            if len(data) == size:
                return data
        raise KernelReadError(f"{what} at {addr:#x} is not in {self.path}'s mapped ranges")

    def u32(self, addr: int, what: str) -> int:
        return struct.unpack("<I", self.read(addr, 4, what))[0]

    def u64(self, addr: int, what: str) -> int:
        return struct.unpack("<Q", self.read(addr, 8, what))[0]


def read_own_frame(mfn: int, path: str = PRIVCMD) -> bytes:
    """Frame ``mfn`` of this domain, mapped read-only through privcmd as DOMID_SELF (Xen refuses a domain
    naming itself by its id) and copied: how a PV guest reads the shared_info its kernel maps in the fixmap."""
    import ctypes
    import fcntl
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    what = f"frame {mfn:#x} (this domain's shared_info) through {path}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise BackendUnavailable(f"cannot read {what}: {(e.strerror or str(e)).lower()}") from None
    try:
        addr = libc.mmap(None, abi.PAGE_SIZE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise KernelReadError(f"cannot read {what}: mmap: {os.strerror(ctypes.get_errno()).lower()}")
        try:
            arr, err = (ctypes.c_uint64 * 1)(mfn), (ctypes.c_int * 1)(0)
            req = struct.pack("<IHxxQQQ", 1, abi.DOMID_SELF, addr, ctypes.addressof(arr), ctypes.addressof(err))
            try:
                fcntl.ioctl(fd, IOCTL_PRIVCMD_MMAPBATCH_V2, req)
            except OSError as e:
                why = (e.strerror or str(e)).lower()
                if e.errno == errno.EPERM:  # Linux's fix for XSA-482 restricts a domU's privcmd to a target domain
                    why += (" (a domU's privcmd maps nothing of its own unless loaded unrestricted: "
                            "xen_privcmd.unrestricted=1 on the kernel command line, or modprobe xen-privcmd "
                            "unrestricted=1)")
                raise KernelReadError(f"cannot read {what}: {why}") from None
            if err[0]:
                raise KernelReadError(f"cannot read {what}: Xen refused the mapping ({os.strerror(-err[0])})")
            return ctypes.string_at(addr, abi.PAGE_SIZE)
        finally:
            libc.munmap(addr, abi.PAGE_SIZE)
    finally:
        os.close(fd)


def read_cpus(path: str) -> list[int]:
    """The possible CPUs, each one a vCPU whose control block and cpu_queue the dump reads."""
    data = read_input(path, "CPU list", KernelReadError, stdin=False, cap=MAX_CPU_LIST)
    cpus = parse_cpu_list(data.decode("ascii", errors="replace"))
    if not cpus:
        raise KernelReadError(f"{path} lists no CPU")
    if cpus[-1] >= MAX_FIFO_CPUS:
        raise KernelReadError(f"{path}: CPU {cpus[-1]} is possible; this reader takes CPU ids "
                              f"0..{MAX_FIFO_CPUS - 1}")
    return cpus


def read_self(kcore: str = KCORE, kallsyms: str = KALLSYMS, cpus_file: str = CPUS_POSSIBLE):
    """(DomainMemory, description) of this kernel's event-channel state, FIFO or 2-level."""
    mem, what, _ = read_self_image(kcore, kallsyms, cpus_file)
    return mem, what


def read_self_image(kcore: str = KCORE, kallsyms: str = KALLSYMS, cpus_file: str = CPUS_POSSIBLE):
    """(DomainMemory, description, which vCPUs' vcpu_info was read or None for FIFO) of this kernel, read twice
    (``read_twice``: the DomainMemory's ``settled`` says whether Linux's per-CPU state held still)."""
    syms = read_symbols(kallsyms)
    if syms and all(a == 0 for a in syms.values()):
        raise BackendUnavailable(f"{kallsyms} hides kernel addresses (kptr_restrict): run as root")
    cpus = read_cpus(cpus_file)
    try:
        with KernelMemory(kcore) as km:
            (mem, what, known), settled = read_twice(lambda: read_image(km, syms, cpus, kallsyms, read_own_frame),
                                                     lambda got: got[0])
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            raise BackendUnavailable(f"cannot read {kcore}: permission denied (run as root)") from None
        raise
    mem.settled = settled
    return mem, f"this kernel ({kcore}, {what})", known


class KcoreSource(MemorySource):
    """This kernel's memory (dom0 or a domU, as root): its FIFO queues with Linux's local heads, or its
    2-level bitmaps with each CPU's vcpu_info and scan position; and any kernel symbol's bytes."""

    kind = "this kernel"

    def __init__(self, kcore: str = KCORE, kallsyms: str = KALLSYMS, cpus_file: str = CPUS_POSSIBLE):
        self.kcore, self.kallsyms, self.cpus_file = kcore, kallsyms, cpus_file
        self.domain = self_domid() or 0

    def image(self) -> EventImage:
        mem, source, known = read_self_image(self.kcore, self.kallsyms, self.cpus_file)
        return EventImage(mem, self.domain, source, guest_known=bool(mem.settled), vcpu_known=known)

    def read_symbol(self, name: str, size: int, offset: int = 0) -> bytes:
        addr = read_symbols(self.kallsyms, (name,)).get(name)
        if addr is None:
            raise KernelReadError(f"{name} is not in {self.kallsyms}")
        if addr == 0:
            raise BackendUnavailable(f"{self.kallsyms} hides kernel addresses (kptr_restrict): run as root")
        with KernelMemory(self.kcore) as km:
            return km.read(addr + offset, size, name if not offset else f"{name}+{offset:#x}")
