"""Moving one handler's retries to its retry stream as they come due.

Retries (and parked messages) wait in the handler's delayed zset. A mover per handler per
process calls ``move_due.lua`` when the earliest one is due, or once a second at the latest
(another process may have scheduled one); the fetch loop's blocking XREADGROUP also reads
the retry stream, so it wakes as soon as they land.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from queues import delayed
from queues.keys import HandlerKeys

MOVE_LIMIT = 500
RETRY_POLL_MS = 1000


class RetryMover:
    __slots__ = ("_client", "_keys", "_next_move_ms", "_scheduled")

    def __init__(self, client: Any, keys: HandlerKeys) -> None:
        self._client = client
        self._keys = keys
        self._next_move_ms = 0
        """Wall-clock ms at which the delayed set is next looked at."""
        self._scheduled = asyncio.Event()

    def retry_due(self, due_ms: int) -> None:
        """A retry of this handler is due at ``due_ms``: look at the delayed set by then."""
        if due_ms < self._next_move_ms:
            self._next_move_ms = due_ms
            self._scheduled.set()

    async def run_forever(self) -> None:
        while True:
            wait_ms = self._next_move_ms - int(time.time() * 1000)
            if wait_ms > 0:
                self._scheduled.clear()
                try:
                    await asyncio.wait_for(self._scheduled.wait(), wait_ms / 1000)
                except TimeoutError:
                    pass
                continue
            await self.move_due()

    async def move_due(self) -> int:
        """Move retries that came due (one atomic script); returns how many moved."""
        now_ms = int(time.time() * 1000)
        moved, next_due = await delayed.move_due(
            self._client, delayed_key=self._keys.delayed, retry_stream=self._keys.retry,
            now_ms=now_ms, limit=MOVE_LIMIT)
        if moved >= MOVE_LIMIT:
            self._next_move_ms = now_ms
        else:
            poll = now_ms + RETRY_POLL_MS
            self._next_move_ms = poll if next_due is None else min(next_due, poll)
        return moved
