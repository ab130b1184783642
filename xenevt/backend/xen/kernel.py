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


class KernelReadError(XenevtError):
    """Kernel memory could not be read or does not hold what we expect."""


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6] (the format of /sys/devices/system/cpu/possible)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            cpus.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise KernelReadError(f"cannot parse CPU list {text.strip()!r}") from None
    return cpus


def read_symbols(path: str, names=NEEDED + ("evtchn_ops", "evtchn_ops_2l", "evtchn_ops_fifo")) -> dict[str, int]:
    want = set(names)
    found: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] in want and len(parts) == 3:  # built-in symbols only
                    found.setdefault(parts[2], int(parts[0], 16))
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
        self.f.seek(phoff)
        table = self.f.read(phentsize * phnum)
        if len(table) < phentsize * phnum:
            self.f.close()
            raise KernelReadError(f"{path}: program header table truncated")
        self.segments = []
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", table, i * phentsize)
            if p_type == PT_LOAD and p_filesz:
                self.segments.append((p_vaddr, p_filesz, p_offset))

    def close(self) -> None:
        self.f.close()

    def mapped(self, addr: int, size: int) -> bool:
        return any(v <= addr and addr + size <= v + n for v, n, _ in self.segments)

    def read(self, addr: int, size: int, what: str) -> bytes:
        for vaddr, filesz, offset in self.segments:
            if vaddr <= addr and addr + size <= vaddr + filesz:
                try:
                    self.f.seek(offset + addr - vaddr)
                    data = self.f.read(size)
                except OSError as e:
                    raise KernelReadError(f"cannot read {what} at {addr:#x} from {self.path}: "
                                          f"{(e.strerror or str(e)).lower()}") from None
                if len(data) == size:
                    return data
                break
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
        with open(cpus_file) as f:
            cpus = parse_cpu_list(f.read())
    except OSError as e:
        raise KernelReadError(f"cannot read {cpus_file}: {(e.strerror or str(e)).lower()}") from None
    if not 1 <= len(cpus) <= 256:
        raise KernelReadError(f"{len(cpus)} possible CPUs: expected 1..256")
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
        for cpu in range(max(cpus) + 1):
            if cpu not in cpus:
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
