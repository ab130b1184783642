"""A copy of a domain image that is of one moment as far as its guest's consumers go.

A guest's upcall takes no lock (Linux's does not), so a copy made while one runs holds LINKs it has cleared beside
local heads it has not yet moved on.  Each vCPU's upcall count (xe_guest_vcpu.ready's high half, odd while an
upcall runs) says whether one ran or started while the copy was made: then it is made again, a few times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# an upcall is microseconds; a consumer descheduled mid-upcall for longer than these tries leaves the copy
# unsettled: its queues are then read as frames outside the guest are
SETTLE_TRIES = 50
SETTLE_PAUSE = 0.0005


def settle(counts: Callable[[], list[int]], copy: Callable[[], T], tries: int = SETTLE_TRIES) -> tuple[T, bool]:
    """``copy()`` made until ``counts()`` (each vCPU's upcall count, read where the guest writes it) is the same
    before and after it and even, at most ``tries`` times, SETTLE_PAUSE apart: the last copy, and whether it
    settled."""
    for _ in range(tries):
        before = counts()
        made = copy()
        if counts() == before and not any(c & 1 for c in before):
            return made, True
        time.sleep(SETTLE_PAUSE)
    return made, False
