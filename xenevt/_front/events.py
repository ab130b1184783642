"""The one consume loop: a domain's events on one vCPU, as its kernel's upcall handler takes them.

One backend call per batch (the simulator's C consume, the real backend's C loop over /dev/xen/evtchn): the
iterator hands out the ports of a batch before asking for the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..backend.base import Backend

BATCH = 256  # events taken per consume call, as the simulator's upcall handler does


class Events:
    """Events as they are delivered: iterate for ports; ``got`` counts them.  Made by ``Host.events``.

    Stops after ``count`` events, or at ``timeout`` seconds once a batch comes back short (a queue still full
    is drained first); ``ping()`` is called every ``every`` seconds meanwhile (a ping-pong with a peer).
    Ctrl-C raises KeyboardInterrupt from the iteration, as anywhere.

    Example::

        with host.events(0, count=1, timeout=10) as ev:
            (port,) = list(ev)
    """

    def __init__(self, backend: Backend, domain: int, vcpu: int = 0, count: int | None = None,
                 timeout: float | None = None, ping: Callable[[], object] | None = None, every: float | None = None):
        self.domain, self.vcpu = domain, vcpu
        self.count, self.timeout = count, timeout
        self.got = 0
        self._backend = backend
        self._ping, self._every = ping, every
        self._started = False

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *exc: object) -> None:
        self._started = True  # (an iteration after the block would start a second loop: it ends at once)
        self.count = self.got

    def __iter__(self) -> Iterator[int]:
        if self._started:
            return
        self._started = True
        b, domain, vcpu, count = self._backend, self.domain, self.vcpu, self.count
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        ping, every = self._ping, self._every
        next_ping = time.monotonic() if ping is not None and every else None
        while count is None or self.got < count:
            now = time.monotonic()
            if next_ping is not None and now >= next_ping:
                ping()  # type: ignore[misc]  # (next_ping is set only with a ping)
                next_ping = now + (every or 0)
            waits = [t - now for t in (deadline, next_ping) if t is not None]
            left = max(0.0, min(waits)) if waits else None
            batch = BATCH if count is None else min(BATCH, count - self.got)
            ports = b.consume(domain, vcpu, batch, left)
            for port in ports:
                self.got += 1
                yield port
            if deadline is not None and time.monotonic() >= deadline and len(ports) < batch:
                return
