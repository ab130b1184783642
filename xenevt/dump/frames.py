"""Rebuild a DomainMemory from raw ABI frames, wherever they were read.

Event-array pages and control blocks (FIFO), or the shared_info page and each
vCPU's vcpu_info (2-level), come as bytes from a saved file, a privcmd mapping
of another domain or the running kernel's memory; the engines want them in a
DomainMemory.  Guest-local state (Linux's per-CPU ``cpu_queue`` heads, or its
2-level scan position and per-CPU port masks) is known only for some sources
and is optional.
"""

from __future__ import annotations

from .. import abi
from ..engine import DomainMemory, LayoutError
from ..engine.layout import ABI_2L, ABI_FIFO, L2_WORDS, VCPU_INFO_SIZE
from ..errors import XenevtError

NO_VCPU = 0xFFFF  # a port no CPU's mask holds (Linux delivers it nowhere): notify_vcpu of no vCPU
CPU_MASK_SIZE = 8 * L2_WORDS  # Linux's per-CPU cpu_evtchn_mask: one bit per 2-level port


class FrameError(XenevtError):
    """Frames that cannot form an event array (too many, wrong size)."""


def from_frames(pages: list[bytes], control_blocks: list[bytes | None], guest_heads: list[list[int]] | None = None,
                nr_chans: int | None = None, guest_ready: list[int] | None = None) -> DomainMemory:
    if not 1 <= len(pages) <= abi.MAX_EVENT_ARRAY_PAGES:
        raise FrameError(f"{len(pages)} event-array pages: the FIFO ABI has 1..{abi.MAX_EVENT_ARRAY_PAGES}")
    if not 1 <= len(control_blocks) <= 256:
        raise FrameError(f"{len(control_blocks)} vCPUs: expected 1..256")
    if guest_heads is not None and (len(guest_heads) > len(control_blocks)
                                    or guest_ready is not None and len(guest_ready) < len(guest_heads)):
        raise FrameError(f"guest queue state for {len(guest_heads)} vCPUs does not match {len(control_blocks)} "
                         "control-block slots")
    try:
        mem = DomainMemory.create(len(control_blocks), len(pages), max(nr_chans or 0,
                                                                          len(pages) * abi.EVENT_WORDS_PER_PAGE))
    except LayoutError as e:
        raise FrameError(str(e)) from None
    for i, page in enumerate(pages):
        if len(page) != abi.PAGE_SIZE:
            raise FrameError(f"event-array page {i} has {len(page)} bytes, not {abi.PAGE_SIZE}")
        mem.add_page(fill=0)
        mem.page_words(i)[:] = memoryview(page).cast("I")
    for v, cb in enumerate(control_blocks):
        if cb is None:
            continue
        if len(cb) < abi.CONTROL_BLOCK_SIZE:
            raise FrameError(f"control block of vCPU {v} has {len(cb)} bytes, not {abi.CONTROL_BLOCK_SIZE}")
        mem.register_control_block(v)
        mem.control_block(v)[:] = memoryview(bytes(cb[: abi.CONTROL_BLOCK_SIZE])).cast("I")
    for v, heads in enumerate(guest_heads or []):
        g = mem.guest(v)
        g[0] = guest_ready[v] if guest_ready else 0
        g[1:17] = memoryview(bytes(4 * 16)).cast("I")
        for p, h in enumerate(heads[:16]):
            g[1 + p] = h
    mem.set_event_abi(ABI_FIFO)
    return mem


def from_shared_info(shared: bytes, vcpu_infos: list[bytes | None], *, scan: list[tuple[int, int]] | None = None,
                     cpu_masks: list[bytes | None] | None = None, nr_chans: int = abi.EVTCHN_2L_NR_CHANNELS
                     ) -> DomainMemory:
    """A 2-level DomainMemory from Xen's shared_info page and each vCPU's own vcpu_info.

    ``vcpu_infos[v]``: the 64 bytes vCPU ``v`` uses (Linux registers them outside shared_info; None where
    unknown: the slot stays as shared_info has it).  ``scan``: Linux's (current_word_idx, current_bit_idx)
    per vCPU, copied as read (the engine refuses one out of range).  ``cpu_masks``: Linux's per-CPU
    cpu_evtchn_mask, which says on which vCPU each port is delivered: it becomes the ports' notify_vcpu
    (NO_VCPU for a port no mask holds), since that is what the engine's upcall scan follows."""
    if len(shared) != abi.PAGE_SIZE:
        raise FrameError(f"shared_info page has {len(shared)} bytes, not {abi.PAGE_SIZE}")
    if not 1 <= len(vcpu_infos) <= 256:
        raise FrameError(f"{len(vcpu_infos)} vCPUs: expected 1..256")
    try:
        mem = DomainMemory.create(len(vcpu_infos), 1, nr_chans)
    except LayoutError as e:
        raise FrameError(str(e)) from None
    base = mem.geometry.l2_offset
    mem.buffer[base: base + abi.PAGE_SIZE] = shared
    for v, info in enumerate(vcpu_infos):
        if info is None:
            continue  # a slot inside shared_info stays as read; past it (vCPU 32 and up), clear
        if len(info) < VCPU_INFO_SIZE:
            raise FrameError(f"vcpu_info of vCPU {v} has {len(info)} bytes, not {VCPU_INFO_SIZE}")
        at = mem.geometry.vcpu_info_offset(v)
        mem.buffer[at: at + VCPU_INFO_SIZE] = info[:VCPU_INFO_SIZE]
    for v, (word, bit) in enumerate(scan or []):
        s = mem.l2_scan(v)
        s[0], s[1] = word & 0xFFFFFFFF, bit & 0xFFFFFFFF
    if cpu_masks is not None:
        owner = [NO_VCPU] * min(nr_chans, abi.EVTCHN_2L_NR_CHANNELS)
        for v, m in enumerate(cpu_masks):
            if m is None:
                continue
            if len(m) != CPU_MASK_SIZE:
                raise FrameError(f"port mask of vCPU {v} has {len(m)} bytes, not {CPU_MASK_SIZE}")
            bits = int.from_bytes(m, "little")
            while bits:
                port = (bits & -bits).bit_length() - 1
                bits &= bits - 1
                if port < len(owner) and owner[port] == NO_VCPU:
                    owner[port] = v  # a port in two CPUs' masks (never in Linux): the first one counts
        for port, v in enumerate(owner):
            if v != 0:
                mem.update_chan(port, notify_vcpu=v)
    mem.set_event_abi(ABI_2L)
    return mem
