"""Historical bugs of Linux's event-channel code (drivers/xen/events/, drivers/xen/evtchn.c), and their signatures
(history.py)."""

from __future__ import annotations
