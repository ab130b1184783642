"""The memory source "a raw dump file": the ABI pages saved by ``xenevt dump --raw`` (FIFO, or 2-level from
version 2 on), checked on load."""

from __future__ import annotations

from .. import abi
from ..dump.rawfile import RawDump, load_raw
from .base import EventImage, MemorySource


class RawFileSource(MemorySource):
    kind = "a raw dump file"

    def __init__(self, path: str):
        self.path = path
        self._raw: RawDump | None = None

    def _load(self) -> RawDump:
        if self._raw is None:
            self._raw = load_raw(self.path)
            self.domain = self._raw.domain
        return self._raw

    def image(self) -> EventImage:
        raw = self._load()
        limit = None
        if raw.has_channels:
            limit = raw.mem.nr_chans if raw.vcpu_known is None else min(raw.mem.nr_chans, abi.EVTCHN_2L_NR_CHANNELS)
        # a FIFO re-save keeps the channel records whether or not the file had a table (as dump always has);
        # a 2-level one only a table it had (Linux's CPU masks say the rest)
        return EventImage(raw.mem, raw.domain, f"file {self.path} ({raw.source})", guest_known=raw.guest_known,
                          max_ports=limit, channel_table=raw.has_channels or raw.vcpu_known is None,
                          vcpu_known=raw.vcpu_known)

    def channels(self):
        return self._load().channels()
