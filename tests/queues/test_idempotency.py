"""Completion markers of idempotent handlers, one Lua call per batch, on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from queues import idempotency, scripts
from queues.keys import HandlerKeys


@pytest.fixture
def keys(uid: str, sync_redis: redis.Redis) -> Iterator[HandlerKeys]:
    handler_keys = HandlerKeys(f"orders-{uid}", f"stock.reserve-{uid}")
    yield handler_keys
    sync_redis.delete(*[handler_keys.done(m) for m in ("m1", "m2", "m3", "m4")])


async def test_a_batch_is_marked_and_looked_up_in_one_call_each(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    await scripts.load_all(aredis)
    await aredis.set(keys.done("m2"), b"1", ex=3600)  # completed earlier
    markers = [keys.done(m) for m in ("m1", "m2", "m3")]

    async with aredis.pipeline(transaction=False) as pipe:
        idempotency.queue_mark_done(pipe, markers, 120)
        (created,) = await pipe.execute()

    # Markers are set NX: the one that existed keeps its TTL, the new ones get the given one.
    assert created == 2
    assert 3500 < await aredis.ttl(keys.done("m2")) <= 3600
    assert 110 < await aredis.ttl(keys.done("m1")) <= 120
    assert await idempotency.completed(aredis, [*markers, keys.done("m4")]) == [
        True, True, True, False]
    assert await idempotency.completed(aredis, []) == []


def test_a_marker_must_live_at_least_a_second() -> None:
    with pytest.raises(ValueError, match="ttl"):
        idempotency.queue_mark_done(object(), ["k"], 0)
