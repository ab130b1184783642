"""The one consume loop: a domain's events on one vCPU, as its kernel's upcall handler takes them.

One backend call per batch (the simulator's C consume, the real backend's C loop over /dev/xen/evtchn): the
iterator hands out the ports of a batch before asking for the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from itertools import chain
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
        self._done = 0  # events of the batches handed out whole
        self._batch: Iterator[int] = iter(())  # the batch being handed out (its length hint: what is left of it)
        self._size = 0
        self._backend = backend
        self._ping, self._every = ping, every
        self._started = False

    @property
    def got(self) -> int:
        """Events handed out so far (one left in a batch when the loop stopped, Ctrl-C, is not counted)."""
        return self._done + self._size - self._batch.__length_hint__()  # type: ignore[attr-defined]

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *exc: object) -> None:
        self._started = True  # (an iteration after the block would start a second loop: it ends at once)
        self.count = self.got

    def __iter__(self) -> Iterator[int]:
        if self._started:
            return iter(())
        self._started = True
        # (chain takes each port from the batch's own list iterator in C: the loop below runs once per batch)
        return chain.from_iterable(self._batches())

    def _batches(self) -> Iterator[Iterator[int]]:
        """Each batch's ports as an iterator, which ``got`` reads (its length hint: what is left of it)."""
        b, domain, vcpu, count = self._backend, self.domain, self.vcpu, self.count
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        ping, every = self._ping, self._every
        next_ping = time.monotonic() if ping is not None and every else None
        while count is None or self.got < count:
            if next_ping is None:  # (the common loop: one clock read a batch, where there is a deadline)
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
            else:
                now = time.monotonic()
                if now >= next_ping:
                    ping()  # type: ignore[misc]  # (next_ping is set only with a ping)
                    next_ping = now + (every or 0)
                left = max(0.0, min(next_ping, deadline if deadline is not None else next_ping) - now)
            batch = BATCH if count is None else min(BATCH, count - self.got)
            ports = b.consume(domain, vcpu, batch, left)
            self._batch, self._size = iter(ports), len(ports)
            yield self._batch
            self._done += self._size  # (asked for the next batch: this one was handed out whole)
            self._batch, self._size = iter(()), 0
            if deadline is not None and time.monotonic() >= deadline and len(ports) < batch:
                return
