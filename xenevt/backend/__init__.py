"""Backend selection: the one place that decides which implementation runs."""

from __future__ import annotations

import os

from ..errors import UsageError
from .base import Backend, NotifyResult, PortStatus

__all__ = ["Backend", "NotifyResult", "PortStatus", "select_backend"]

XEN_EVTCHN_DEVICE = "/dev/xen/evtchn"


def select_backend(name: str = "auto", *, state_dir: str | None = None, caller: int | None = None,
                   read_only: bool = False) -> Backend:
    """``auto`` means the real host where /dev/xen/evtchn exists, the simulator elsewhere.

    ``read_only``: the caller only inspects, so a backend may open its state read-only.
    """
    if name == "auto":
        name = "xen" if os.path.exists(XEN_EVTCHN_DEVICE) else "sim"
    if name == "sim":
        from .sim import SimBackend

        return SimBackend(state_dir, caller, read_only)
    if name == "xen":
        from .xen import XenBackend

        return XenBackend(caller)
    raise UsageError(f"unknown backend {name!r} (expected auto, sim or xen)")
