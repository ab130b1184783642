"""The event-channel engines: C for the loops, a Python reference beside each.

``engine_for(mem)`` (FIFO) and ``twolevel_for(mem)`` (2-level) are the one
place that picks an implementation; C and reference expose the same methods
and return the same raw numbers (see codes.py).
"""

from __future__ import annotations

import os

from .domainmem import DomainMemory
from .layout import Chan, Geometry, LayoutError

__all__ = ["Chan", "Consume", "DomainMemory", "Err", "Geometry", "LayoutError", "SP", "Walk", "engine_for",
           "twolevel_for"]


def __getattr__(name: str):
    """codes.py's enums on first use: opening a host to list its ports makes none of them."""
    if name in ("SP", "Consume", "Err", "Walk"):
        from . import codes

        return getattr(codes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _impl(impl: str | None) -> str:
    impl = impl or os.environ.get("XENEVT_ENGINE", "c")
    if impl not in ("c", "python"):
        raise ValueError(f"unknown engine implementation {impl!r} (expected 'c' or 'python')")
    return impl


def engine_for(mem: DomainMemory, impl: str | None = None):
    """The engine over ``mem``: ``"c"`` (default) or ``"python"``.

    ``XENEVT_ENGINE=python`` selects the reference everywhere, e.g. to
    cross-check a surprising result without the compiled module.
    """
    if _impl(impl) == "c":
        from .native import NativeEngine

        return NativeEngine(mem)
    from .reference import ReferenceEngine

    return ReferenceEngine(mem)


def twolevel_for(mem: DomainMemory, impl: str | None = None):
    """The 2-level engine over ``mem`` (a version 2 image): chosen as ``engine_for`` chooses."""
    if _impl(impl) == "c":
        from .twolevel_native import NativeTwoLevel

        return NativeTwoLevel(mem)
    from .twolevel import TwoLevelReference

    return TwoLevelReference(mem)
