"""The memory source "frames mapped through privcmd": a domain's event memory, by frame.

FIFO: only the domain itself knows which frames hold its event array and
control blocks (no hypercall reveals them), so the user names them: the
event-array frames in order and each vCPU's control block as (frame,
offset).  Linux's local heads are not in those frames, so walks start at the
control blocks' heads.

2-level: the shared_info frame is the hypervisor's (XEN_DOMCTL_getdomaininfo
reports it, where the backend can ask: ``shared_info_frame``), or the user
names it.  Each vCPU's vcpu_info is where the guest registered it (Linux
does, outside shared_info), which only the guest knows: a vCPU whose
vcpu_info frame the user does not name is shown as not read, and Linux's
scan position is not in these frames, so its upcall is predicted from port 0.
"""

from __future__ import annotations

from .. import abi
from ..dump.frames import from_frames, from_shared_info
from ..engine.layout import VCPU_INFO_SIZE
from ..errors import BackendUnavailable
from .base import EventImage, MemoryBackend, MemoryUnavailable
from .live import LiveSource


class FramesSource(LiveSource):
    def __init__(self, backend: MemoryBackend, domain: int, gfns, controls, shared_info: int | str | None = None,
                 vcpu_infos=()):
        super().__init__(backend, domain)
        self.gfns, self.controls = list(gfns), list(controls)
        self.shared_info, self.vcpu_infos = shared_info, list(vcpu_infos)
        self.kind = f"{backend.name} frames"

    def image(self) -> EventImage:
        if self.gfns:
            return self._fifo()
        return self._two_level()

    def _fifo(self) -> EventImage:
        n = len(self.gfns)
        frames = self.read_frames(self.gfns + [g for g, _ in self.controls])
        pages, cb_frames = frames[:n], frames[n:]
        cbs: list[bytes | None] = [f[o:o + abi.CONTROL_BLOCK_SIZE]
                                   for f, (_, o) in zip(cb_frames, self.controls, strict=True)]
        mem = from_frames(pages, cbs or [None])
        return EventImage(mem, self.domain, f"{self.backend.name}: {n} frame(s) mapped through privcmd",
                          guest_known=False)

    def _two_level(self) -> EventImage:
        frame, nr_vcpus = self._shared_frame()
        nv = max(len(self.vcpu_infos), nr_vcpus or 1)
        frames = self.read_frames([frame] + [g for g, _ in self.vcpu_infos])
        infos: list[bytes | None] = [f[o:o + VCPU_INFO_SIZE] for f, (_, o) in zip(frames[1:], self.vcpu_infos,
                                                                                   strict=True)]
        infos += [None] * (nv - len(infos))
        mem = from_shared_info(frames[0], infos)
        return EventImage(mem, self.domain, f"{self.backend.name}: shared_info frame {frame:#x} and "
                          f"{len(self.vcpu_infos)} vcpu_info frame(s) mapped through privcmd", guest_known=False,
                          max_ports=abi.EVTCHN_2L_NR_CHANNELS, vcpu_known=[i is not None for i in infos])

    def _shared_frame(self) -> tuple[int, int | None]:
        """(the shared_info frame, the domain's vCPU count where known): as given, else the hypervisor's."""
        given = None if self.shared_info is None or self.shared_info == "auto" else int(self.shared_info)
        try:
            frame, nr_vcpus = self.backend.shared_info_frame(self.domain)
        except BackendUnavailable as e:
            if given is not None:  # the vCPU count is a hint: the frames are read without it
                return given, None
            raise MemoryUnavailable(f"the {self.backend.name} backend cannot ask the hypervisor for domain "
                                    f"{self.domain}'s shared_info frame ({e}): give it with --shared-info FRAME"
                                    ) from None
        return (frame if given is None else given), nr_vcpus
