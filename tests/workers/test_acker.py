"""The ack batcher against a real Redis (a private server: one test flushes its scripts):
an idempotency marker is sent ahead of its ack in the same pipeline, and lands with it
even when Redis has lost its scripts (a restart)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from queues.connection import connect
from queues.keys import HandlerKeys
from workers.runtime.acker import AckBatcher
from workers.demo_redis import PrivateRedis, redis_server_path

pytestmark = pytest.mark.skipif(redis_server_path() is None, reason="needs redis-server")


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateRedis]:
    with PrivateRedis() as private:
        yield private


@pytest.fixture
async def client(server: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    redis_client = connect(server.url)
    yield redis_client
    await redis_client.flushall()
    await redis_client.aclose()


async def _pending_message(client: aioredis.Redis, keys: HandlerKeys) -> str:
    await client.xgroup_create(keys.stream, keys.group, id="0", mkstream=True)
    await client.xadd(keys.stream, {"payload": "{}"})
    [[_, [(entry_id, _)]]] = await client.xreadgroup(keys.group, "c1", {keys.stream: ">"})
    return str(entry_id.decode())


async def test_the_marker_and_the_ack_leave_in_one_flush(client: aioredis.Redis) -> None:
    keys = HandlerKeys("orders", "stock.reserve")
    entry_id = await _pending_message(client, keys)
    acker = AckBatcher(client)

    acker.mark_done(keys.done("m1"), 60)
    acker.ack(keys.stream, keys.group, entry_id)
    assert acker.pending == 2
    await acker.flush()

    assert acker.pending == 0
    assert 50 < await client.ttl(keys.done("m1")) <= 60
    assert (await client.xpending(keys.stream, keys.group))["pending"] == 0


async def test_a_marker_lands_with_its_ack_even_when_redis_lost_its_scripts(
        client: aioredis.Redis) -> None:
    keys = HandlerKeys("orders", "stock.reserve")
    acker = AckBatcher(client)
    acker.mark_done(keys.done("m0"), 60)
    await acker.flush()
    # Given Redis lost its scripts (as after a restart),
    await client.script_flush()
    entry_id = await _pending_message(client, keys)
    # when a marker and its ack are flushed, both land in that same flush.
    acker.mark_done(keys.done("m1"), 60)
    acker.ack(keys.stream, keys.group, entry_id)
    await acker.flush()
    assert (await client.xpending(keys.stream, keys.group))["pending"] == 0
    assert await client.exists(keys.done("m1"))
    assert acker.pending == 0
