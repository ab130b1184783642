"""Historical bugs of Xen's event-channel code outside the FIFO queues (xen/common/event_channel.c: allocation,
close, reset, limits, control blocks), and their signatures (history.py)."""

from __future__ import annotations
