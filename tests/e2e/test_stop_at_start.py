"""A pool told to stop while it is still starting (every loop in its first Redis command)
stops at once. A single cancel is not enough there: redis-py's asyncio client can lose a
cancellation that lands while it reads a reply, and the loop that lost it would go on
(``workers.runtime.tasks.cancel_and_wait`` cancels again until every task is gone)."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

from e2e.failure_helpers import Lab, PoolRun
from queues.keys import PROCESSES
from workers import CircuitBreaker

pytestmark = pytest.mark.slow


class Order(BaseModel):
    n: int


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 4}


@pytest.mark.parametrize("round_", range(5))
async def test_a_pool_stopped_as_it_starts_stops_at_once(
        lab: Lab, aredis: aioredis.Redis, round_: int) -> None:
    for name in ("a", "b"):
        @lab.app.handler(lab.stream(name), name=lab.name(name), breaker=CircuitBreaker())
        async def handle(order: Order) -> None:
            raise AssertionError("nothing was published")

    # Given a pool with two handlers (fetch, mover, lease and heartbeat loops), when it is
    # told to stop right after it was started, then it is gone well within its grace period
    # (PoolRun fails the test if it is not gone within grace + 5 s),
    started = time.monotonic()
    async with PoolRun(lab.app, grace=1.0):
        pass
    assert time.monotonic() - started < 3.0
    # and it took its heartbeat with it.
    assert not [f for f in await aredis.hkeys(PROCESSES)
                if f.decode().startswith(f"{lab.app.name}:")]
