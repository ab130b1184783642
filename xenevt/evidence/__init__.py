"""Evidence about event channels, from any source, in one model; and the doctor that reads it.

Readers turn what an operator has at hand (the hypervisor's 'e' debug-key
dump, lsevtchn's text, EVTCHNOP_status over a domain, the guest's FIFO pages
from the simulator, a raw file, privcmd or this kernel) into the same facts;
``doctor`` applies its rules to those facts without knowing where they came from.
The model's names are imported on first use: ``list`` needs only ``names``.
"""

from __future__ import annotations

__all__ = ["DomainFacts", "Evidence", "PortFacts", "QueueFacts", "VcpuFacts"]


def __getattr__(name: str):
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
