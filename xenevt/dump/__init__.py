"""Dumps of event-channel memory, FIFO or 2-level: one model, several sources, several views.

``model`` decodes a DomainMemory (live simulator memory, a loaded raw file,
privcmd and kernel mappings) of the ABI it is on: FIFO with the engine's
non-destructive walker, 2-level with the engine's upcall scan run on a copy;
``rawfile`` saves and loads the ABI's bytes for offline decoding; ``render``
prints the model as text.  JSON is the model's ``as_dict()``.
"""

from .model import DomainDump, L2PortView, L2VcpuView, QueueView, TwoLevelDump, VcpuView, WordView, build_dump
from .rawfile import RawDump, load_raw, save_raw

__all__ = ["DomainDump", "L2PortView", "L2VcpuView", "QueueView", "RawDump", "TwoLevelDump", "VcpuView", "WordView",
           "build_dump", "load_raw", "save_raw"]
