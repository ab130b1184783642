"""Rebuild a DomainMemory from raw ABI frames, wherever they were read.

Event-array pages and control blocks come as bytes from a saved file, a
privcmd mapping of another domain or the running kernel's memory; the engine's
walker wants them in a DomainMemory.  Guest-local heads (Linux's per-CPU
``cpu_queue``) are known only for some sources and are optional.
"""

from __future__ import annotations

from .. import abi
from ..engine import DomainMemory, LayoutError
from ..errors import XenevtError


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
    return mem
