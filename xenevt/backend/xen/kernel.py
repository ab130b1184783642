"""This kernel's own FIFO event-channel state, read through /proc/kallsyms and /proc/kcore.

Linux (drivers/xen/events/events_fifo.c) keeps the event array as a static
array of page pointers (``event_array``, ``event_array_pages``), one control
block pointer per CPU (``cpu_control_block``) and per CPU the queue heads it
is consuming from (``cpu_queue``).  kallsyms gives their addresses (per-CPU
symbols as offsets added to ``__per_cpu_offset[cpu]``), kcore is an ELF core
of kernel memory whose PT_LOAD segments say where each address range lies in
the file.  Everything is read, never written; pointers read from kernel
memory are checked against the segments before they are followed.
"""

from __future__ import annotations

import bisect
import errno
import struct

from ... import abi
from ...dump.frames import from_frames
from ...errors import BackendUnavailable, XenevtError

KCORE = "/proc/kcore"
KALLSYMS = "/proc/kallsyms"
CPUS_POSSIBLE = "/sys/devices/system/cpu/possible"
NEEDED = ("event_array", "event_array_pages", "cpu_control_block", "cpu_queue", "__per_cpu_offset")
PT_LOAD = 1
MAX_CPU_ID = 8192  # Linux's largest NR_CPUS (x86 MAXSMP)
MAX_FIFO_CPUS = 256  # the FIFO dump handles this many vCPUs (engine layout)
_HEX = frozenset("0123456789abcdefABCDEF")


class KernelReadError(XenevtError):
    """Kernel memory could not be read or does not hold what we expect."""


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


def read_symbols(path: str, names=NEEDED + ("evtchn_ops", "evtchn_ops_2l", "evtchn_ops_fifo")) -> dict[str, int]:
    want = set(names)
    found: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] in want:  # built-in symbols only
                    if not 0 < len(parts[0]) <= 16 or not _HEX.issuperset(parts[0]):
                        raise ValueError(parts[0])
                    found.setdefault(parts[2], int(parts[0], 16))
    except PermissionError:
        raise BackendUnavailable(f"cannot read {path}: permission denied (run as root)") from None
    except OSError as e:
        raise BackendUnavailable(f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None
    except ValueError:  # UnicodeDecodeError included
        raise KernelReadError(f"{path}: not in kallsyms format") from None
    return found


class KernelMemory:
    """Reads kernel virtual addresses out of an ELF core (/proc/kcore or a file laid out like it)."""

    def __init__(self, path: str = KCORE):
        self.path = path
        try:
            self.f = open(path, "rb")
        except PermissionError:
            raise BackendUnavailable(f"cannot read {path}: permission denied (run as root)") from None
        except OSError as e:
            raise BackendUnavailable(f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None
        hdr = self.f.read(64)
        if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2 or hdr[5] != 1:
            self.f.close()
            raise KernelReadError(f"{path} is not a 64-bit little-endian ELF core")
        phoff, = struct.unpack_from("<Q", hdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
        if phentsize < 56 or phnum == 0 or phnum > 65535:
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


def read_self(kcore: str = KCORE, kallsyms: str = KALLSYMS, cpus_file: str = CPUS_POSSIBLE):
    """(DomainMemory, description) of this kernel's FIFO state; refuses the 2-level ABI."""
    syms = read_symbols(kallsyms)
    missing = [n for n in NEEDED if n not in syms]
    if missing:
        raise KernelReadError(f"this kernel has no FIFO event-channel code to read ({', '.join(missing)} not in "
                              f"{kallsyms}; is it a Xen guest kernel?)")
    if all(syms[n] == 0 for n in NEEDED):
        raise BackendUnavailable(f"{kallsyms} hides kernel addresses (kptr_restrict): run as root")
    try:
        with open(cpus_file, "rb") as f:
            cpus = parse_cpu_list(f.read().decode("ascii", errors="replace"))
    except OSError as e:
        raise KernelReadError(f"cannot read {cpus_file}: {(e.strerror or str(e)).lower()}") from None
    if not cpus:
        raise KernelReadError(f"{cpus_file} lists no CPU")
    if cpus[-1] >= MAX_FIFO_CPUS:
        raise KernelReadError(f"{cpus_file}: CPU {cpus[-1]} is possible; this reader takes CPU ids "
                              f"0..{MAX_FIFO_CPUS - 1}")
    km = KernelMemory(kcore)
    try:
        if "evtchn_ops" in syms and "evtchn_ops_2l" in syms:
            ops = km.u64(syms["evtchn_ops"], "evtchn_ops")
            if ops == syms["evtchn_ops_2l"]:
                raise KernelReadError("this kernel uses the 2-level event-channel ABI: there is no FIFO event array "
                                      "to dump (Xen older than 4.4, or xen.fifo_events=0)")
        npages = km.u32(syms["event_array_pages"], "event_array_pages")
        if npages == 0:
            raise KernelReadError("the kernel's FIFO event array has no pages (the FIFO ABI is not in use)")
        if npages > abi.MAX_EVENT_ARRAY_PAGES:
            raise KernelReadError(f"event_array_pages reads {npages}: more than the ABI's "
                                  f"{abi.MAX_EVENT_ARRAY_PAGES} (wrong symbols?)")
        pages = []
        for i in range(npages):
            ptr = km.u64(syms["event_array"] + 8 * i, f"event_array[{i}]")
            pages.append(km.read(ptr, abi.PAGE_SIZE, f"event-array page {i}"))
        cbs, heads = [], []
        possible = set(cpus)
        for cpu in range(max(cpus) + 1):
            if cpu not in possible:
                cbs.append(None)
                heads.append([0] * 16)
                continue
            off = km.u64(syms["__per_cpu_offset"] + 8 * cpu, f"__per_cpu_offset[{cpu}]")
            cb_ptr = km.u64(syms["cpu_control_block"] + off, f"cpu_control_block of CPU {cpu}")
            # a CPU that never came up (or went offline before init) has no control block
            cbs.append(km.read(cb_ptr, abi.CONTROL_BLOCK_SIZE, f"control block of CPU {cpu}")
                       if cb_ptr and km.mapped(cb_ptr, abi.CONTROL_BLOCK_SIZE) else None)
            heads.append(list(struct.unpack("<16I", km.read(syms["cpu_queue"] + off, 64, f"cpu_queue of CPU {cpu}"))))
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            raise BackendUnavailable(f"cannot read {kcore}: permission denied (run as root)") from None
        raise
    finally:
        km.close()
    mem = from_frames(pages, cbs, heads)
    return mem, f"this kernel ({kcore}, {npages} event-array page(s), {len(cpus)} CPU(s))"
