"""The memory source "a raw dump file": the ABI pages saved by ``xenevt dump --raw``, checked on load."""

from __future__ import annotations

from ..dump.rawfile import RawDump, load_raw
from .base import FifoImage, MemorySource


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

    def fifo_image(self) -> FifoImage:
        raw = self._load()
        # a re-save keeps the channel records whether or not the file had a table (as dump always has)
        return FifoImage(raw.mem, raw.domain, f"file {self.path} ({raw.source})", guest_known=raw.guest_known,
                         max_ports=raw.mem.nr_chans if raw.has_channels else None, channel_table=True)

    def channels(self):
        return self._load().channels()
