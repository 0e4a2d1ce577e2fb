"""Consumer-group operations against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from queues.keys import HandlerKeys
from queues.streams import (
    autoclaim_ids,
    claim,
    ensure_group,
    keep_fresh,
    pending_of,
    queue_ack,
    read_group,
    read_raw,
)


@pytest.fixture
async def keys(aredis: aioredis.Redis, uid: str) -> AsyncIterator[HandlerKeys]:
    k = HandlerKeys(f"orders-{uid}", f"billing.charge-{uid}")
    yield k
    await aredis.delete(k.stream, k.retry)


async def _deliveries(client: aioredis.Redis, stream: str, group: str) -> dict[str, int]:
    rows = await pending_of(client, stream, group)
    return {r.entry_id: r.deliveries for r in rows}


async def test_ensure_group_creates_the_stream_and_is_idempotent(
    aredis: aioredis.Redis, keys: HandlerKeys
) -> None:
    assert not await aredis.exists(keys.stream)

    assert await ensure_group(aredis, keys.stream, keys.group) is True
    assert await ensure_group(aredis, keys.stream, keys.group) is False

    assert await aredis.exists(keys.stream)
    [info] = await aredis.xinfo_groups(keys.stream)
    assert info["name"] == keys.group.encode()


async def test_a_new_group_sees_messages_published_before_it(
    aredis: aioredis.Redis, keys: HandlerKeys
) -> None:
    old = await aredis.xadd(keys.stream, {"payload": "{}"})
    await ensure_group(aredis, keys.stream, keys.group)

    got = await read_group(aredis, keys.group, "c1", [keys.stream], count=10, block_ms=None)

    assert [e.entry_id for e in got] == [old.decode()]


async def test_read_group_reads_both_streams_at_once(
    aredis: aioredis.Redis, keys: HandlerKeys
) -> None:
    for stream in keys.read_streams:
        await ensure_group(aredis, stream, keys.group)
    a = (await aredis.xadd(keys.stream, {"payload": '{"n":1}', "id": "m1"})).decode()
    b = (await aredis.xadd(keys.retry, {"payload": '{"n":2}', "id": "m2"})).decode()

    got = await read_group(aredis, keys.group, "c1", keys.read_streams, count=10, block_ms=100)

    assert {(e.source, e.entry_id, e.message_id) for e in got} == {
        (keys.stream, a, "m1"), (keys.retry, b, "m2")}
    # Nothing new is left; both are this consumer's pending entries.
    assert await read_group(aredis, keys.group, "c1", keys.read_streams, count=10,
                            block_ms=None) == []
    pending = [p.entry_id for s in keys.read_streams
               for p in await pending_of(aredis, s, keys.group, consumer="c1")]
    assert set(pending) == {a, b}


async def test_read_group_blocks_until_something_arrives(
    aredis: aioredis.Redis, keys: HandlerKeys, redis_url: str
) -> None:
    await ensure_group(aredis, keys.stream, keys.group)
    reader = aioredis.Redis.from_url(redis_url)
    try:
        task = asyncio.create_task(read_group(reader, keys.group, "c1", [keys.stream],
                                              count=10, block_ms=5000))
        await asyncio.sleep(0.1)
        assert not task.done()
        eid = (await aredis.xadd(keys.stream, {"payload": "{}"})).decode()
        got = await asyncio.wait_for(task, 5)
    finally:
        await reader.aclose()

    assert [e.entry_id for e in got] == [eid]


async def test_queue_ack_acks_and_deletes_retry_entries_in_one_pipeline(
    aredis: aioredis.Redis, keys: HandlerKeys
) -> None:
    for stream in keys.read_streams:
        await ensure_group(aredis, stream, keys.group)
    main_ids = [(await aredis.xadd(keys.stream, {"payload": "{}"})).decode() for _ in range(3)]
    retry_id = (await aredis.xadd(keys.retry, {"payload": "{}"})).decode()
    await read_group(aredis, keys.group, "c1", keys.read_streams, count=10, block_ms=None)

    async with aredis.pipeline(transaction=False) as pipe:
        queue_ack(pipe, keys.stream, keys.group, main_ids[:2])
        queue_ack(pipe, keys.retry, keys.group, [retry_id], delete=True)
        queue_ack(pipe, keys.retry, keys.group, [])  # nothing to do: nothing queued
        await pipe.execute()

    assert list(await _deliveries(aredis, keys.stream, keys.group)) == [main_ids[2]]
    assert await _deliveries(aredis, keys.retry, keys.group) == {}
    assert await aredis.xlen(keys.stream) == 3
    assert await aredis.xlen(keys.retry) == 0


async def test_keep_fresh_resets_idle_without_counting_a_delivery(
    aredis: aioredis.Redis, keys: HandlerKeys
) -> None:
    await ensure_group(aredis, keys.stream, keys.group)
    eid = (await aredis.xadd(keys.stream, {"payload": "{}"})).decode()
    await read_group(aredis, keys.group, "c1", [keys.stream], count=1, block_ms=None)
    await asyncio.sleep(0.3)
    [before] = await pending_of(aredis, keys.stream, keys.group)
    assert before.idle_ms >= 250

    await keep_fresh(aredis, keys.group, "c1", {keys.stream: [eid]})

    [after] = await pending_of(aredis, keys.stream, keys.group)
    assert after.idle_ms < 200
    assert after.deliveries == before.deliveries == 1
    assert after.consumer == "c1"
    # And so another consumer's XAUTOCLAIM with the same threshold leaves it alone.
    taken = await autoclaim_ids(aredis, keys.stream, keys.group, "c2", min_idle_ms=250,
                                count=10)
    assert taken == []


async def test_autoclaim_ids_takes_idle_entries_only_without_counting_a_delivery(
    aredis: aioredis.Redis, keys: HandlerKeys
) -> None:
    await ensure_group(aredis, keys.stream, keys.group)
    old = (await aredis.xadd(keys.stream, {"payload": '{"n":1}'})).decode()
    await read_group(aredis, keys.group, "dead", [keys.stream], count=1, block_ms=None)
    await asyncio.sleep(0.3)
    young = (await aredis.xadd(keys.stream, {"payload": '{"n":2}'})).decode()
    await read_group(aredis, keys.group, "alive", [keys.stream], count=1, block_ms=None)

    taken = await autoclaim_ids(aredis, keys.stream, keys.group, "c2", min_idle_ms=250,
                                count=10)

    assert taken == [old]
    owners = {r.entry_id: (r.consumer, r.deliveries)
              for r in await pending_of(aredis, keys.stream, keys.group)}
    assert owners == {old: ("c2", 1), young: ("alive", 1)}


async def test_claim_takes_named_entries_whatever_their_idle_time(
    aredis: aioredis.Redis, keys: HandlerKeys
) -> None:
    await ensure_group(aredis, keys.stream, keys.group)
    ids = [(await aredis.xadd(keys.stream, {"payload": "{}"})).decode() for _ in range(2)]
    await read_group(aredis, keys.group, "dead", [keys.stream], count=2, block_ms=None)

    got = await claim(aredis, keys.stream, keys.group, "c2", [ids[0]])

    assert [e.entry_id for e in got] == [ids[0]]
    assert await claim(aredis, keys.stream, keys.group, "c2", []) == []
    mine = await pending_of(aredis, keys.stream, keys.group, consumer="c2")
    assert [(r.entry_id, r.deliveries) for r in mine] == [(ids[0], 2)]


async def test_read_group_parses_replies_as_redis_sent_them(
    aredis: aioredis.Redis, keys: HandlerKeys, redis_url: str
) -> None:
    for stream in keys.read_streams:
        await ensure_group(aredis, stream, keys.group)
    raw = aioredis.Redis.from_url(redis_url)
    read_raw(raw)
    try:
        one = (await aredis.xadd(keys.stream, {"payload": "{}", "id": "m1"})).decode()
        [got] = await read_group(raw, keys.group, "c1", keys.read_streams, count=10,
                                 block_ms=None)
        assert (got.source, got.entry_id, got.fields) == (
            keys.stream, one, {b"payload": b"{}", b"id": b"m1"})
        a = (await aredis.xadd(keys.stream, {"payload": "1"})).decode()
        b = (await aredis.xadd(keys.retry, {"payload": "2"})).decode()
        both = await read_group(raw, keys.group, "c1", keys.read_streams, count=10,
                                block_ms=None)
        assert {(e.source, e.entry_id, e.payload) for e in both} == {
            (keys.stream, a, b"1"), (keys.retry, b, b"2")}
    finally:
        await raw.aclose()
