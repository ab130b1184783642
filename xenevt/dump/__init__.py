"""Dumps of FIFO event-channel memory: one model, several sources, several views.

``model`` decodes a DomainMemory (live simulator memory, a loaded raw file,
later privcmd and kernel mappings) with the engine's non-destructive walker;
``rawfile`` saves and loads the ABI pages for offline decoding; ``render``
prints the model as text.  JSON is the model's ``as_dict()``.
"""

from .model import DomainDump, QueueView, VcpuView, WordView, build_dump
from .rawfile import RawDump, load_raw, save_raw

__all__ = ["DomainDump", "QueueView", "RawDump", "VcpuView", "WordView", "build_dump", "load_raw", "save_raw"]
