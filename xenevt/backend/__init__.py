"""Backend selection: the one place that decides which implementation runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from .base import Backend

__all__ = ["Backend", "NotifyResult", "PortStatus", "default_state_dir", "select_backend"]

XEN_EVTCHN_DEVICE = "/dev/xen/evtchn"  # Linux's event-channel device: its presence means "on Xen"


def __getattr__(name: str):
    """base.py's names on first use: choosing a backend needs neither the protocol nor NotifyResult."""
    if name in ("Backend", "NotifyResult", "PortStatus"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_state_dir() -> str:
    """Where the simulator keeps its host when neither --state nor $XENEVT_STATE names a folder."""
    from ..sim.statedir import default_state_dir  # (not sim.host: inspecting imports no hypercalls)

    return default_state_dir()


def select_backend(name: str = "auto", *, state_dir: str | None = None, caller: int | None = None,
                   read_only: bool = False, created: Callable[[str], None] | None = None) -> Backend:
    """``auto`` means the real host where /dev/xen/evtchn exists, the simulator elsewhere.

    ``read_only``: the caller only inspects, so a backend may open its state read-only.
    ``created``: ``state_dir`` is the default folder, not one the user named; if the simulator is chosen and
    no host is there yet, one is created (2 domains, 2 vCPUs each) and ``created(state_dir)`` says so.
    """
    if name == "auto":
        name = "xen" if os.path.exists(XEN_EVTCHN_DEVICE) else "sim"
    if name == "sim":
        from .sim import SimBackend

        if created is not None:
            from ..sim.create import create_host
            from ..sim.statefile import FILE_NAME

            state_dir = state_dir or default_state_dir()
            if not os.path.exists(os.path.join(state_dir, FILE_NAME)):
                create_host(state_dir)
                created(state_dir)
        return SimBackend(state_dir, caller, read_only)
    if name == "xen":
        from .xen import XenBackend

        return XenBackend(caller)
    raise UsageError(f"unknown backend {name!r} (expected auto, sim or xen)")
