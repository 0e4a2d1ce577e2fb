"""A pool at full concurrency whose handlers all talk to Redis at once: commands wait for
a free connection of the bounded pool instead of failing (redis-py's default pool fails
past 100 connections, which would count against the handler's breaker), and an idempotent
handler's bookkeeping costs one call per batch, not a connection per message."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

from e2e.failure_helpers import Lab, PoolRun, Where, where
from queues import breaker_store
from workers import CircuitBreaker
from workers.context import Context

pytestmark = pytest.mark.slow

CONCURRENCY = 150


class Order(BaseModel):
    n: int


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": CONCURRENCY, "batch_size": CONCURRENCY}


async def test_every_handler_of_a_full_pool_publishing_at_once_succeeds(
        lab: Lab, aredis: aioredis.Redis) -> None:
    orders, events = lab.stream("orders"), lab.stream("events")
    name = lab.name("fan")
    together = asyncio.Barrier(CONCURRENCY)
    handled: Counter[str] = Counter()

    # Given a pool of 150 slots whose idempotent handler publishes a follow-up, and 150
    # messages, so that 150 handlers publish at the very same moment,
    @lab.app.handler(orders, name=name, idempotent=True,
                     breaker=CircuitBreaker(window=20, min_calls=1, failure_rate=0.01))
    async def fan_out(order: Order, ctx: Context) -> None:
        await together.wait()
        await ctx.publish(events, {"n": order.n})
        handled[ctx.message_id] += 1

    published = await lab.app.apublish_many(orders, (Order(n=n) for n in range(CONCURRENCY)))
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: len(handled) == CONCURRENCY, within=15,
                         what="every message handled")
        await pool.until(lambda: _settled(aredis, lab, name), within=5, what="every ack")

    # then every handler succeeded, once (no "too many connections" failure, which would
    # also have opened this hair-trigger breaker), and every event is there.
    assert set(handled) == set(published) and set(handled.values()) == {1}
    assert await aredis.xlen(events) == CONCURRENCY
    assert (await breaker_store.read_state(aredis, lab.keys(name))).state == "closed"
    # Each message's completion is marked for the idempotent handler.
    keys = lab.keys(name)
    assert sum([await aredis.exists(keys.done(m)) for m in published]) == CONCURRENCY


async def _settled(client: aioredis.Redis, lab: Lab, handler: str) -> bool:
    return await where(client, lab.keys(handler)) == Where()
