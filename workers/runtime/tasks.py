"""Stopping the pool's own asyncio tasks for certain.

A single ``task.cancel()`` is not enough: redis-py's asyncio client can lose a cancellation
that lands while it reads a reply (on Python 3.11 a cancel racing ``asyncio.timeout`` comes
out as a timeout, which redis-py reports as a connection error), and a loop that handles
connection errors by trying again would then run on, holding up the shutdown until the
supervisor kills the process. So the cancel is repeated until the task is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_EVERY = 0.1
"""Seconds between cancels of a task that is still running."""


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has finished, cancelling again any that
    swallowed the cancellation. Their results and exceptions are not looked at."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
