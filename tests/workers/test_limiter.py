"""The pool's CapacityLimiter: the bulkhead's size, shared by every handler of a pool."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from workers.runtime.limiter import CapacityLimiter, PoolStatistics


async def _settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        CapacityLimiter(0)


async def test_acquire_up_to_takes_what_is_free() -> None:
    limiter = CapacityLimiter(5)

    assert await limiter.acquire_up_to(3) == 3
    assert await limiter.acquire_up_to(10) == 2  # only two were left
    assert limiter.available == 0
    assert limiter.statistics() == PoolStatistics(in_flight=5, capacity=5, waiting=0)


async def test_acquire_up_to_waits_for_a_slot_and_counts_the_waiter() -> None:
    limiter = CapacityLimiter(2)
    await limiter.acquire_up_to(2)

    fetcher = asyncio.create_task(limiter.acquire_up_to(10))
    await _settle()

    assert not fetcher.done()
    assert limiter.statistics() == PoolStatistics(in_flight=2, capacity=2, waiting=1)

    limiter.release()
    assert await asyncio.wait_for(fetcher, 1) == 1
    assert limiter.statistics() == PoolStatistics(in_flight=2, capacity=2, waiting=0)


async def test_release_wakes_waiters_one_at_a_time_in_order() -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire_up_to(1)
    first = asyncio.create_task(limiter.acquire_up_to(1))
    await _settle()
    second = asyncio.create_task(limiter.acquire_up_to(1))
    await _settle()
    assert limiter.statistics().waiting == 2

    limiter.release()
    await _settle()

    assert first.done() and not second.done()
    assert limiter.statistics().waiting == 1
    limiter.release()
    assert await asyncio.wait_for(second, 1) == 1
    assert limiter.statistics() == PoolStatistics(1, 1, 0)


async def test_a_batch_release_lets_the_next_fetcher_take_the_whole_batch() -> None:
    limiter = CapacityLimiter(4)
    await limiter.acquire_up_to(4)
    fetcher = asyncio.create_task(limiter.acquire_up_to(4))
    await _settle()

    limiter.release(3)

    assert await asyncio.wait_for(fetcher, 1) == 3
    assert limiter.available == 0


async def test_a_cancelled_waiter_is_not_counted_any_more() -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire_up_to(1)
    waiter = asyncio.create_task(limiter.acquire_up_to(1))
    await _settle()
    assert limiter.statistics().waiting == 1

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert limiter.statistics() == PoolStatistics(in_flight=1, capacity=1, waiting=0)
    limiter.release()
    assert limiter.available == 1


async def test_borrowing_over_the_limit_makes_the_next_fetch_wait() -> None:
    limiter = CapacityLimiter(3)
    await limiter.acquire_up_to(3)

    limiter.borrow_over(2)  # a read returned more entries than slots were free
    assert limiter.statistics() == PoolStatistics(in_flight=5, capacity=3, waiting=0)

    task = asyncio.create_task(limiter.acquire_up_to(1))
    await _settle()
    limiter.release(2)
    await _settle()
    assert not task.done()  # back at the limit, still no free slot
    limiter.release(1)
    assert await asyncio.wait_for(task, 1) == 1


def test_releasing_more_than_borrowed_is_an_error() -> None:
    limiter = CapacityLimiter(2)

    with pytest.raises(RuntimeError, match="released more slots"):
        limiter.release()


def test_statistics_are_a_frozen_snapshot() -> None:
    stats = CapacityLimiter(3).statistics()

    assert stats == PoolStatistics(in_flight=0, capacity=3, waiting=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.in_flight = 1  # type: ignore[misc]


async def test_releasing_several_slots_wakes_as_many_waiters() -> None:
    limiter = CapacityLimiter(2)
    await limiter.acquire_up_to(2)
    first = asyncio.create_task(limiter.acquire_up_to(1))
    second = asyncio.create_task(limiter.acquire_up_to(1))
    await _settle()

    try:
        limiter.release(2)
        await _settle()

        assert first.done() and second.done()
        assert limiter.statistics() == PoolStatistics(in_flight=2, capacity=2, waiting=0)
    finally:
        for task in (first, second):
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)


async def test_a_fetcher_that_gave_its_slots_back_queues_behind_one_already_waiting() -> None:
    limiter = CapacityLimiter(4)
    # Given a fetcher holding every slot and another one waiting,
    await limiter.acquire_up_to(4)
    waiting = asyncio.create_task(limiter.acquire_up_to(4))
    await _settle()
    # when the first gives its slots back and asks again at once (an empty read),
    limiter.release(4)
    again = asyncio.create_task(limiter.acquire_up_to(4))
    await _settle()
    # then the one that was waiting gets them, and the other waits its turn.
    assert waiting.done() and await waiting == 4
    assert not again.done()
    limiter.release(4)
    assert await asyncio.wait_for(again, 1) == 4


async def test_a_woken_waiter_cancelled_before_it_ran_passes_its_turn_on() -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire_up_to(1)
    first = asyncio.create_task(limiter.acquire_up_to(1))
    await _settle()
    second = asyncio.create_task(limiter.acquire_up_to(1))
    await _settle()
    limiter.release()       # wakes ``first``...
    first.cancel()          # ...which is cancelled before it runs
    await _settle()
    assert first.cancelled()
    assert await asyncio.wait_for(second, 1) == 1
    assert limiter.statistics() == PoolStatistics(1, 1, 0)


async def test_waiters_woken_together_share_the_free_slots_in_order() -> None:
    limiter = CapacityLimiter(3)
    await limiter.acquire_up_to(3)
    fetchers = [asyncio.create_task(limiter.acquire_up_to(2)) for _ in range(3)]
    await _settle()
    limiter.release(3)      # wakes all three; the first takes 2, the second 1
    await _settle()
    assert [f.done() for f in fetchers] == [True, True, False]
    assert [fetchers[0].result(), fetchers[1].result()] == [2, 1]
    limiter.release(2)
    assert await asyncio.wait_for(fetchers[2], 1) == 2


async def test_slots_a_woken_fetcher_leaves_go_to_the_next_in_line() -> None:
    limiter = CapacityLimiter(8)
    await limiter.acquire_up_to(8)
    # Given an idle fetcher waiting for one slot,
    idle = asyncio.create_task(limiter.acquire_up_to(1))
    await _settle()
    # when a fetcher gives every slot back and at once asks for five (so it queues behind
    # the idle one, whose turn has come),
    async def give_back_and_ask_again() -> int:
        limiter.release(8)
        return await limiter.acquire_up_to(5)

    busy = asyncio.create_task(give_back_and_ask_again())
    await _settle()
    # then the idle one takes its one and the other gets five at once, not at the next
    # release.
    assert idle.done() and await idle == 1
    assert busy.done() and await busy == 5
    assert limiter.available == 2
