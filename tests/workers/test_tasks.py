"""``cancel_and_wait``: a task that lost a cancellation is cancelled again until it is gone."""

from __future__ import annotations

import asyncio

from workers.runtime.tasks import cancel_and_wait


async def test_a_task_that_swallows_a_cancel_is_cancelled_again_until_it_stops() -> None:
    swallowed = 0

    async def loop_that_loses_one_cancel() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as a cancel lost inside a client library would be
                current = asyncio.current_task()
                assert current is not None
                current.uncancel()

    stubborn = asyncio.create_task(loop_that_loses_one_cancel())
    polite = asyncio.create_task(asyncio.sleep(10))
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)

    await asyncio.wait_for(cancel_and_wait([stubborn, polite, finished]), 2)

    assert swallowed == 1
    assert stubborn.cancelled() and polite.cancelled()
    assert finished.done() and not finished.cancelled()


async def test_nothing_to_cancel_returns_at_once() -> None:
    await asyncio.wait_for(cancel_and_wait([]), 0.5)
