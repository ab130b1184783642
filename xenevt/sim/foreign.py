"""Frames for foreign mappings: where a simulated guest's event array and control blocks lie, as privcmd maps them."""

from __future__ import annotations

import errno

from .. import abi
from ..errors import ChannelError, channel_error
from .access import Access
from .store import HostFile

# frame numbers of the simulated guests' shared pages, for foreign mappings (privcmd)
EVENT_ARRAY_GFN = 0x100000
CONTROL_BLOCK_GFN = 0x200000
SHARED_INFO_GFN = 0x300000  # the domain's shared_info page (the 2-level bitmaps, vcpu_info of vCPUs 0..31)


class ForeignFrames:
    """The simulated guests' shared pages by frame number (gfn), in the open ``file``; who may map them: ``access``."""

    def __init__(self, file: HostFile, access: Access):
        self.file = file
        self.access = access

    def gfns(self, domid: int) -> dict:
        """The frame numbers a foreign mapping uses for the domain's event array and control blocks."""
        mem = self.access.domain(domid, "list the frames of").mem
        return {"event_array": [EVENT_ARRAY_GFN + i for i in range(mem.nr_pages)],
                "control_blocks": {v: [CONTROL_BLOCK_GFN + v, mem.cb_offset(v)] for v in range(mem.nr_vcpus)
                                   if mem.cb_offset(v) is not None},
                "shared_info": SHARED_INFO_GFN}

    def frame_offsets(self, caller: int, domid: int, gfns: list[int]) -> list[int]:
        """Per frame: where it lies in the state file (page aligned), or -errno; privcmd's rules for who may map."""
        self.access.named(caller, domid, "map frames of")
        out = []
        for gfn in gfns:
            try:
                out.append(self.frame_offset(domid, gfn))
            except ChannelError as e:
                out.append(-(e.errno or errno.EINVAL))
        return out

    def read_frames(self, caller: int, domid: int, gfns: list[int]) -> list[bytes]:
        """A copy of each frame, as a privcmd mapping would show it; the first bad frame is an error."""
        self.access.named(caller, domid, "map frames of")
        return [bytes(self.file.mm[off:off + abi.PAGE_SIZE]) for off in (self.frame_offset(domid, g) for g in gfns)]

    def frame_offset(self, domid: int, gfn: int) -> int:
        """Where frame ``gfn`` of the domain lies in the state file (page aligned); EINVAL if it has none."""
        dom = self.access.domain(domid, "map frames of")
        mem, geo = dom.mem, dom.mem.geometry
        if EVENT_ARRAY_GFN <= gfn < EVENT_ARRAY_GFN + mem.nr_pages:
            return mem.offset + geo.pages_offset + (gfn - EVENT_ARRAY_GFN) * abi.PAGE_SIZE
        if CONTROL_BLOCK_GFN <= gfn < CONTROL_BLOCK_GFN + mem.nr_vcpus and mem.cb_offset(gfn - CONTROL_BLOCK_GFN) \
                is not None:
            return mem.offset + geo.cb_pages_offset + (gfn - CONTROL_BLOCK_GFN) * abi.PAGE_SIZE
        if gfn == SHARED_INFO_GFN:
            return mem.offset + geo.l2_offset
        raise channel_error("map frames of", errno.EINVAL, f"frame {gfn:#x} is not an event-array, control-block "
                            "or shared_info page", domain=domid)
