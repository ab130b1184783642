"""Where a Linux guest keeps its event-channel state, FIFO or 2-level, read through any kernel-memory reader.

Linux (drivers/xen/events/events_fifo.c) keeps the event array as a static
array of page pointers (``event_array``, ``event_array_pages``), one control
block pointer per CPU (``cpu_control_block``) and per CPU the queue heads it
is consuming from (``cpu_queue``); per-CPU symbols are offsets added to
``__per_cpu_offset[cpu]``.  On 2-level (events_2l.c; the same in 6.1 and
6.12) it reaches Xen's shared_info through ``HYPERVISOR_shared_info``, each
CPU's vcpu_info through the per-CPU pointer ``xen_vcpu`` (arch/x86/xen/
enlighten.c: shared_info's slot at first, the registered per-CPU copy once
VCPUOP_register_vcpu_info succeeded), and keeps per CPU the ports it delivers
there (``cpu_evtchn_mask``) and where its upcall scan resumes
(``current_word_idx``, ``current_bit_idx``).  A PV kernel maps shared_info
(a Xen page, not guest RAM) at a fixmap address that /proc/kcore does not
cover: its frame is then the machine address in ``xen_start_info``'s
``shared_info`` field, read through a caller's frame reader.  Which ABI is in use:
``evtchn_ops`` points at ``evtchn_ops_2l`` or ``evtchn_ops_fifo``.  This
module knows that layout and nothing about
where the memory comes from: this kernel's /proc/kcore today, another
domain's memory mapped from dom0 or an ``xl dump-core`` file next, each
giving a reader with ``read``/``u32``/``u64``/``mapped`` over kernel virtual
addresses and the symbols' addresses.
"""

from __future__ import annotations

import struct
from typing import Protocol

from .. import abi
from ..dump.frames import from_frames, from_shared_info
from ..errors import BackendUnavailable, MiB, XenevtError, cap_text

NEEDED = ("event_array", "event_array_pages", "cpu_control_block", "cpu_queue", "__per_cpu_offset")
ABI_SYMBOLS = ("evtchn_ops", "evtchn_ops_2l", "evtchn_ops_fifo")
L2_NEEDED = ("HYPERVISOR_shared_info", "xen_vcpu", "cpu_evtchn_mask", "current_word_idx", "current_bit_idx",
             "__per_cpu_offset")
L2_PV = ("xen_start_info",)  # a PV kernel's start_info: where its shared_info frame is named
START_INFO_MAGIC = b"xen-"   # struct start_info: char magic[32] ("xen-3.0-x86_64"), nr_pages, then shared_info
START_INFO_SHARED_INFO = 40  # offset of shared_info, the MACHINE address of the shared_info page
VCPU_INFO_SIZE = 64  # struct vcpu_info, x86_64
CPU_MASK_SIZE = 512  # cpu_evtchn_mask: EVTCHN_2L_NR_CHANNELS bits
MAX_FIFO_CPUS = 256  # the FIFO dump handles this many vCPUs (engine layout)
MAX_SYMBOL_TEXT = 256 * MiB  # a System.map is some 5 MiB, /proc/kallsyms with every module some 15 MiB
MAX_SYMBOL_LINE = 4096       # "ADDRESS TYPE NAME [module]", a name at most KSYM_NAME_LEN (512) bytes


class KernelReadError(XenevtError):
    """Kernel memory could not be read or does not hold what we expect."""


def symbol_lines(f, path: str):
    """(line number, whitespace-split fields) of each line of a System.map or kallsyms file ``f`` (binary): at
    most MAX_SYMBOL_LINE bytes a line and MAX_SYMBOL_TEXT in all, so a wrong file (a disk image, gigabytes with
    no newline) costs one line of error, not the memory."""
    total, n = 0, 0
    while True:
        raw = f.readline(MAX_SYMBOL_LINE + 1)
        if not raw:
            return
        n += 1
        total += len(raw)
        if total > MAX_SYMBOL_TEXT:
            raise KernelReadError(f"{path}: larger than the {cap_text(MAX_SYMBOL_TEXT)} cap of a symbol file")
        if len(raw) > MAX_SYMBOL_LINE:
            raise KernelReadError(f"{path}, line {n}: longer than {MAX_SYMBOL_LINE} bytes: not a symbol line")
        yield n, raw.split()


class KernelReader(Protocol):
    """Kernel virtual memory, as one source sees it (kcore's segments, a guest's page tables …)."""

    def read(self, addr: int, size: int, what: str) -> bytes: ...

    def mapped(self, addr: int, size: int) -> bool: ...

    def u32(self, addr: int, what: str) -> int: ...

    def u64(self, addr: int, what: str) -> int: ...


def check_symbols(syms: dict[str, int], where: str) -> None:
    """Refuse a symbol table with no FIFO code in it, or whose addresses are hidden (kptr_restrict)."""
    missing = [n for n in NEEDED if n not in syms]
    if missing:
        raise KernelReadError(f"this kernel has no FIFO event-channel code to read ({', '.join(missing)} not in "
                              f"{where}; is it a Xen guest kernel?)")
    if all(syms[n] == 0 for n in NEEDED):
        raise BackendUnavailable(f"{where} hides kernel addresses (kptr_restrict): run as root")


def uses_2l(km: KernelReader, syms: dict[str, int]) -> bool:
    """Whether ``evtchn_ops`` points at ``evtchn_ops_2l`` (Xen older than 4.4, or xen.fifo_events=0); a
    kernel whose symbols do not say is taken as FIFO, which its own checks then confirm or refuse."""
    if "evtchn_ops" in syms and "evtchn_ops_2l" in syms:
        return km.u64(syms["evtchn_ops"], "evtchn_ops") == syms["evtchn_ops_2l"]
    return False


def check_l2_symbols(syms: dict[str, int], where: str) -> None:
    missing = [n for n in L2_NEEDED if n not in syms]
    if missing:
        raise KernelReadError(f"this kernel uses the 2-level ABI but {', '.join(missing)} not in {where}: cannot "
                              "find its shared_info and vcpu_info")


def read_shared_info(km: KernelReader, syms: dict[str, int], read_frame=None) -> tuple[bytes, str]:
    """(the shared_info page, how it was read).  Through ``km`` where it maps HYPERVISOR_shared_info (HVM and
    PVH put it in a RAM page); else, on PV, the frame start_info names, read by ``read_frame(mfn)``."""
    ptr = km.u64(syms["HYPERVISOR_shared_info"], "HYPERVISOR_shared_info")
    if km.mapped(ptr, abi.PAGE_SIZE) or read_frame is None or "xen_start_info" not in syms:
        return km.read(ptr, abi.PAGE_SIZE, "the shared_info page (HYPERVISOR_shared_info)"), "kernel memory"
    si = km.u64(syms["xen_start_info"], "xen_start_info")
    if not si or not km.mapped(si, START_INFO_SHARED_INFO + 8):
        raise KernelReadError(f"the shared_info page at {ptr:#x} is not in kernel memory this reader maps, and "
                              "this kernel has no start_info to name its frame (not a PV guest?)")
    if not km.read(si, 32, "start_info's magic").startswith(START_INFO_MAGIC):
        raise KernelReadError(f"xen_start_info ({si:#x}) does not point at a start_info page (wrong symbols?)")
    mfn = km.u64(si + START_INFO_SHARED_INFO, "start_info.shared_info") // abi.PAGE_SIZE
    return read_frame(mfn), f"shared_info frame {mfn:#x} from start_info"


def read_2l(km: KernelReader, syms: dict[str, int], cpus: list[int], read_frame=None):
    """(shared_info page, vcpu_info per CPU or None, (word, bit) scan position per CPU, cpu_evtchn_mask per
    CPU or None, how shared_info was read) of a 2-level kernel.  A CPU that is not possible, or whose
    xen_vcpu is NULL or unreadable, has no vcpu_info (None)."""
    shared, how = read_shared_info(km, syms, read_frame)
    infos: list[bytes | None] = []
    scan: list[tuple[int, int]] = []
    masks: list[bytes | None] = []
    possible = set(cpus)
    for cpu in range(max(cpus) + 1):
        if cpu not in possible:
            infos.append(None)
            scan.append((0, 0))
            masks.append(None)
            continue
        off = km.u64(syms["__per_cpu_offset"] + 8 * cpu, f"__per_cpu_offset[{cpu}]")
        vp = km.u64(syms["xen_vcpu"] + off, f"xen_vcpu of CPU {cpu}")
        infos.append(km.read(vp, VCPU_INFO_SIZE, f"vcpu_info of CPU {cpu}")
                     if vp and km.mapped(vp, VCPU_INFO_SIZE) else None)
        scan.append((km.u32(syms["current_word_idx"] + off, f"current_word_idx of CPU {cpu}"),
                     km.u32(syms["current_bit_idx"] + off, f"current_bit_idx of CPU {cpu}")))
        masks.append(km.read(syms["cpu_evtchn_mask"] + off, CPU_MASK_SIZE, f"cpu_evtchn_mask of CPU {cpu}"))
    return shared, infos, scan, masks, how


def read_image(km: KernelReader, syms: dict[str, int], cpus: list[int], where: str, read_frame=None):
    """(DomainMemory, what was read, which vCPUs' vcpu_info was read or None for FIFO) of the Linux kernel in
    ``km``, FIFO or 2-level as it chose: the one reading that --self, a guest read from dom0 and a dump-core
    file share (``where`` names the symbols' source in errors; ``read_frame``: see read_shared_info)."""
    if uses_2l(km, syms):
        check_l2_symbols(syms, where)
        shared, infos, scan, masks, how = read_2l(km, syms, cpus, read_frame)
        known = [i is not None for i in infos]
        via = "" if how == "kernel memory" else f", {how} through privcmd"
        return (from_shared_info(shared, infos, scan=scan, cpu_masks=masks),
                f"2-level ABI, {len(cpus)} CPU(s), {sum(known)} vcpu_info(s) read{via}", known)
    check_symbols(syms, where)
    pages, cbs, heads = read_fifo(km, syms, cpus)
    return from_frames(pages, cbs, heads), f"{len(pages)} event-array page(s), {len(cpus)} CPU(s)", None


def read_fifo(km: KernelReader, syms: dict[str, int], cpus: list[int]):
    """(event-array pages, control block per CPU or None, Linux's cpu_queue heads per CPU) of a FIFO kernel.

    ``cpus``: the possible CPU ids, ascending.  Refuses the 2-level ABI.  Pointers read from kernel memory
    are followed only through ``km``, which checks them against what it can read."""
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
    cbs: list[bytes | None] = []
    heads: list[list[int]] = []
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
    return pages, cbs, heads
