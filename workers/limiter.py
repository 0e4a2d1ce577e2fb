"""A pool's concurrency limit: the bulkhead's size, shared by every handler in the pool."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """What a bulkhead is doing right now (after Trio's ``CapacityLimiter.statistics()``)."""

    in_flight: int
    """Messages whose handler is running."""
    capacity: int
    """The pool's concurrency limit."""
    waiting: int
    """Fetchers waiting for a free slot: the pool is saturated while this is above zero."""


class CapacityLimiter:
    """Slots for messages. Fetchers take several at once (one per message of a batch) so a
    batch never holds more messages than the pool can run; each message gives its slot back.
    Not thread-safe: it lives on the pool's event loop."""

    __slots__ = ("_borrowed", "_total", "_waiters")

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("capacity must be >= 1")
        self._total = total
        self._borrowed = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def available(self) -> int:
        return self._total - self._borrowed

    async def acquire_up_to(self, wanted: int) -> int:
        """Wait until at least one slot is free, then take ``min(wanted, free)`` slots."""
        while self._borrowed >= self._total:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        granted = min(wanted, self._total - self._borrowed)
        self._borrowed += granted
        return granted

    def borrow_over(self, count: int) -> None:
        """Take ``count`` slots now, even past the limit (entries already read must run;
        the next fetch then waits until the pool is back under its limit)."""
        self._borrowed += count

    def release(self, count: int = 1) -> None:
        self._borrowed -= count
        if self._borrowed < 0:
            raise RuntimeError("released more slots than were borrowed")
        # Wake one waiter per free slot: each takes at least one when it runs.
        free = self._total - self._borrowed
        while self._waiters and free > 0:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(self._borrowed, self._total, len(self._waiters))
