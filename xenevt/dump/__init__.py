"""Dumps of event-channel memory, FIFO or 2-level: one model, several sources, several views.

``decode`` decodes a DomainMemory (live simulator memory, a loaded raw file,
privcmd and kernel mappings) of the ABI it is on into ``model``'s views: FIFO with the engine's
non-destructive walker, 2-level with the engine's upcall scan run on a copy;
``rawfile`` saves and loads the ABI's bytes for offline decoding; ``render``
prints the model as text (``text``: plain lines and streamed tables, which ``list`` uses without the model).
JSON is the model's ``as_dict()``.  The names below are imported on first use.
"""

from __future__ import annotations

_FROM = {"DomainDump": "model", "L2PortView": "model", "L2VcpuView": "model", "QueueView": "model",
         "TwoLevelDump": "model", "VcpuView": "model", "WordView": "model", "build_dump": "decode",
         "RawDump": "rawfile", "load_raw": "rawfile", "save_raw": "rawfile"}

__all__ = sorted(_FROM)


def __getattr__(name: str):
    if name in _FROM:
        from importlib import import_module

        return getattr(import_module(f".{_FROM[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
