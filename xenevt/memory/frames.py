"""The memory source "frames mapped through privcmd": a domain's event array and control blocks, by frame.

Only the domain itself knows which frames hold them (no hypercall reveals
them), so the user names them: the event-array frames in order and each
vCPU's control block as (frame, offset).  Linux's local heads are not in
those frames, so walks start at the control blocks' heads.
"""

from __future__ import annotations

from .. import abi
from ..dump.frames import from_frames
from .base import FifoImage
from .live import LiveSource


class FramesSource(LiveSource):
    def __init__(self, backend, domain: int, gfns, controls):
        super().__init__(backend, domain)
        self.gfns, self.controls = list(gfns), list(controls)
        self.kind = f"{backend.name} frames"

    def fifo_image(self) -> FifoImage:
        n = len(self.gfns)
        frames = self.read_frames(self.gfns + [g for g, _ in self.controls])
        pages, cb_frames = frames[:n], frames[n:]
        cbs = [f[o:o + abi.CONTROL_BLOCK_SIZE] for f, (_, o) in zip(cb_frames, self.controls, strict=True)]
        mem = from_frames(pages, cbs or [None])
        return FifoImage(mem, self.domain, f"{self.backend.name}: {n} frame(s) mapped through privcmd",
                         guest_known=False)
