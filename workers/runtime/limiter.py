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

    First come, first served: a fetcher that has just given its slots back cannot take them
    again ahead of one already waiting. Without that, two handlers polling idle streams can
    pass the pool's slots back and forth and starve a third whose stream is full.
    Not thread-safe: it lives on the pool's event loop."""

    __slots__ = ("_borrowed", "_total", "_waiters", "_woken")

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("capacity must be >= 1")
        self._total = total
        self._borrowed = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._woken = 0
        """Waiters woken by a release that have not run yet: their turn is reserved."""

    @property
    def available(self) -> int:
        return self._total - self._borrowed

    async def acquire_up_to(self, wanted: int) -> int:
        """Wait for this fetcher's turn and at least one free slot, then take
        ``min(wanted, free)`` slots."""
        if self._waiters or self._woken or self._borrowed >= self._total:
            await self._wait_turn()
        granted = min(wanted, self._total - self._borrowed)
        self._borrowed += granted
        if self._waiters and self._borrowed < self._total:
            self._wake()  # slots this fetcher did not want: the next in line may use them
        return granted

    async def _wait_turn(self) -> None:
        loop = asyncio.get_running_loop()
        again = False
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            if again:
                self._waiters.appendleft(waiter)  # keep its place at the head of the line
            else:
                self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    # Woken, then cancelled before it could take a slot: pass the turn on.
                    self._woken -= 1
                    self._wake()
                raise
            self._woken -= 1
            if self._borrowed < self._total:
                return
            again = True  # fetchers woken before this one took every free slot

    def borrow_over(self, count: int) -> None:
        """Take ``count`` slots now, even past the limit (entries already read must run;
        the next fetch then waits until the pool is back under its limit)."""
        self._borrowed += count

    def release(self, count: int = 1) -> None:
        self._borrowed -= count
        if self._borrowed < 0:
            raise RuntimeError("released more slots than were borrowed")
        self._wake()

    def _wake(self) -> None:
        """Wake one waiter per free slot not already promised to a woken one: each takes
        at least one slot when it runs."""
        free = self._total - self._borrowed - self._woken
        while self._waiters and free > 0:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
                free -= 1

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(self._borrowed, self._total, len(self._waiters))
