"""The FIFO event-channel engine: C for the loops, a Python reference beside it.

``engine_for(mem)`` is the one place that picks an implementation; both
expose the same methods and return the same raw numbers (see codes.py).
"""

from __future__ import annotations

import os

from .codes import SP, Consume, Err, Walk
from .layout import Chan, DomainMemory, Geometry, LayoutError

__all__ = ["Chan", "Consume", "DomainMemory", "Err", "Geometry", "LayoutError", "SP", "Walk", "engine_for"]


def engine_for(mem: DomainMemory, impl: str | None = None):
    """The engine over ``mem``: ``"c"`` (default) or ``"python"``.

    ``XENEVT_ENGINE=python`` selects the reference everywhere, e.g. to
    cross-check a surprising result without the compiled module.
    """
    impl = impl or os.environ.get("XENEVT_ENGINE", "c")
    if impl == "c":
        from .native import NativeEngine

        return NativeEngine(mem)
    if impl == "python":
        from .reference import ReferenceEngine

        return ReferenceEngine(mem)
    raise ValueError(f"unknown engine implementation {impl!r} (expected 'c' or 'python')")
