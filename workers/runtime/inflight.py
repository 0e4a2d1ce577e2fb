"""Which of one handler's messages this process holds: queued or running, and since when."""

from __future__ import annotations

import asyncio

EntryKey = tuple[str, str]
"""(source stream, entry id)"""


class InFlight:
    """One handler's messages between fetch and settlement in this process.

    The fetch side adds them; the runner removes each once settled (or dropped unstarted at
    shutdown). Recovery skips what is listed here; keep-fresh refreshes the running ones'
    idle time in Redis; a drain waits for none to be left.
    """

    __slots__ = ("_settled", "_waiters", "outstanding", "running")

    def __init__(self) -> None:
        self.outstanding = 0
        """Messages queued or running."""
        self.running: dict[EntryKey, float] = {}
        """Running messages -> ``time.monotonic()`` at their start."""
        self._settled = asyncio.Event()
        self._settled.set()
        self._waiters: dict[EntryKey, asyncio.Future[None]] = {}

    def __contains__(self, key: EntryKey) -> bool:
        return key in self.running

    def queued(self, count: int) -> None:
        self.outstanding += count
        self._settled.clear()

    def started(self, key: EntryKey, at: float) -> None:
        self.running[key] = at

    def finished(self, key: EntryKey | None, count: int = 1) -> None:
        """``count`` messages left (settled; or, with no key, dropped unstarted)."""
        if key is not None:
            self.running.pop(key, None)
            if self._waiters:
                waiter = self._waiters.pop(key, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        self.outstanding -= count
        if self.outstanding <= 0:
            self._settled.set()

    def waiter(self, key: EntryKey) -> asyncio.Future[None]:
        """A future set when the message ``key`` is settled."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[key] = done
        return done

    async def drained(self) -> None:
        """Wait until none is queued or running."""
        await self._settled.wait()
