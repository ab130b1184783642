"""Replays of Xen's event-channel bugs outside the FIFO queues (allocation, close, reset, limits), each with its
fault switch in the simulator's Python-side Xen (xenevt/sim)."""

from __future__ import annotations
