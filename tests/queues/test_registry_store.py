"""The registry and heartbeat hashes against a real Redis; each test uses names of its own
and deletes its fields afterwards (both hashes are shared by every app on a Redis)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from queues import registry_store as store
from queues.keys import PROCESSES, REGISTRY


@pytest.fixture
async def names(uid: str, aredis: aioredis.Redis) -> AsyncIterator[tuple[str, str]]:
    pair = (f"billing.charge-{uid}", f"shop-{uid}:payments:host:0")
    yield pair
    await aredis.hdel(REGISTRY, pair[0])
    await aredis.hdel(PROCESSES, pair[1])


async def test_handler_records_are_stored_and_read_back_as_json_text(
        aredis: aioredis.Redis, sync_redis: redis.Redis, names: tuple[str, str]) -> None:
    handler, _ = names
    record = json.dumps({"name": handler, "stream": "orders", "pool": "payments"})
    await store.write_handlers(aredis, {})  # nothing to write: nothing sent
    await store.write_handlers(aredis, {handler: record})
    assert store.read_handlers_sync(sync_redis)[handler] == record
    assert (await store.read_handlers(aredis))[handler] == record


async def test_a_heartbeat_is_written_read_and_removed(
        aredis: aioredis.Redis, sync_redis: redis.Redis, names: tuple[str, str]) -> None:
    _, consumer = names
    beat = {"app": "shop", "pool": "payments", "pid": 42, "seen_at": 1_700_000_000_000}
    await store.write_heartbeat(aredis, consumer, beat)
    assert store.read_heartbeats_sync(sync_redis)[consumer] == beat
    assert (await store.read_heartbeats(aredis))[consumer] == beat
    await store.remove_heartbeat(aredis, consumer)
    assert consumer not in store.read_heartbeats_sync(sync_redis)


async def test_heartbeats_that_are_not_json_objects_are_skipped(
        aredis: aioredis.Redis, sync_redis: redis.Redis, names: tuple[str, str]) -> None:
    _, consumer = names
    for junk in ("{not json", "[1, 2]"):
        await aredis.hset(PROCESSES, consumer, junk)
        assert consumer not in store.read_heartbeats_sync(sync_redis)
