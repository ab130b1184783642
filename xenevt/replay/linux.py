"""Replays of Linux's event-channel bugs (drivers/xen/events/), each with its fault switch in the simulated guest
kernel or libxenevtchn (xenevt/sim)."""

from __future__ import annotations
