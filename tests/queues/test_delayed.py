"""Delayed retries against a real Redis: retry_later.lua and move_due.lua."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from queues.delayed import move_due, retry_fields, schedule_retry
from queues.envelope import Envelope
from queues.keys import HandlerKeys
from queues.streams import ensure_group, read_group

NOW = 1_700_000_000_000


async def _pending_entry(
    client: aioredis.Redis, keys: HandlerKeys, fields: dict[str, str | bytes]
) -> Envelope:
    """Given a message delivered to the handler and not yet acked."""
    await ensure_group(client, keys.stream, keys.group)
    await client.xadd(keys.stream, fields)  # type: ignore[arg-type]
    [envelope] = await read_group(client, keys.group, "c1", [keys.stream], count=1, block_ms=None)
    return envelope


async def _pending_count(client: aioredis.Redis, stream: str, group: str) -> int:
    info = await client.xpending(stream, group)
    return int(info["pending"])


def test_retry_fields_bump_the_attempt_and_keep_everything_else() -> None:
    fields = {b"payload": b"{}", b"id": b"m1", b"attempt": b"1", b"x-tenant": b"acme"}

    out = retry_fields(fields, attempt=2, first_failed_at_ms=NOW, origin_entry_id="5-0")

    assert out == {
        b"payload": b"{}", b"id": b"m1", b"attempt": b"2", b"x-tenant": b"acme",
        b"first_failed_at": str(NOW).encode(), b"origin_entry_id": b"5-0",
    }


async def test_schedule_retry_acks_and_parks_the_message(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"billing.charge-{uid}")
    env = await _pending_entry(aredis, keys, {"payload": '{"n": 1}', "id": "m1"})
    fields = retry_fields(env.fields, attempt=2, first_failed_at_ms=NOW,
                          origin_entry_id=env.origin_entry_id)

    scheduled = await schedule_retry(
        aredis, source_stream=env.source, group=keys.group, entry_id=env.entry_id,
        delayed_key=keys.delayed, due_ms=NOW + 5000, fields=fields,
    )

    assert scheduled is True
    assert await _pending_count(aredis, keys.stream, keys.group) == 0
    [(member, score)] = await aredis.zrange(keys.delayed, 0, -1, withscores=True)
    assert score == NOW + 5000
    version, source, entry_id, flat = json.loads(member)
    assert (version, source, entry_id) == (1, keys.stream, env.entry_id)
    assert dict(zip(flat[::2], flat[1::2], strict=True))["attempt"] == "2"


async def test_schedule_retry_refuses_an_entry_already_acked(
    aredis: aioredis.Redis, uid: str
) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    env = await _pending_entry(aredis, keys, {"payload": "{}"})
    common = dict(source_stream=env.source, group=keys.group, entry_id=env.entry_id,
                  delayed_key=keys.delayed, due_ms=NOW, fields=env.fields)

    first = await schedule_retry(aredis, **common)  # type: ignore[arg-type]
    second = await schedule_retry(aredis, **common)  # type: ignore[arg-type]

    assert (first, second) == (True, False)
    assert await aredis.zcard(keys.delayed) == 1


async def test_identical_messages_get_distinct_members(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    await ensure_group(aredis, keys.stream, keys.group)
    for _ in range(2):
        await aredis.xadd(keys.stream, {"payload": "same"})
    envs = await read_group(aredis, keys.group, "c1", [keys.stream], count=2, block_ms=None)

    for env in envs:
        await schedule_retry(aredis, source_stream=env.source, group=keys.group,
                             entry_id=env.entry_id, delayed_key=keys.delayed, due_ms=NOW,
                             fields={b"payload": b"same", b"attempt": b"2"})

    assert await aredis.zcard(keys.delayed) == 2


async def test_drop_source_deletes_the_entry_from_the_retry_stream(
    aredis: aioredis.Redis, uid: str
) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    await ensure_group(aredis, keys.retry, keys.group)
    await aredis.xadd(keys.retry, {"payload": "{}", "attempt": "2"})
    [env] = await read_group(aredis, keys.group, "c1", [keys.retry], count=1, block_ms=None)

    await schedule_retry(aredis, source_stream=env.source, group=keys.group,
                         entry_id=env.entry_id, delayed_key=keys.delayed, due_ms=NOW,
                         fields=env.fields, drop_source=True)

    assert await aredis.xlen(keys.retry) == 0
    assert await aredis.zcard(keys.delayed) == 1


async def test_schedule_retry_can_be_queued_on_a_pipeline(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    env = await _pending_entry(aredis, keys, {"payload": "{}"})

    async with aredis.pipeline(transaction=False) as pipe:
        await schedule_retry(pipe, source_stream=env.source, group=keys.group,
                             entry_id=env.entry_id, delayed_key=keys.delayed, due_ms=NOW,
                             fields=env.fields)
        replies = await pipe.execute()

    assert replies == [1]
    assert await aredis.zcard(keys.delayed) == 1


async def _park(client: aioredis.Redis, keys: HandlerKeys, n: int, due_ms: int,
                fields: dict[bytes, bytes] | None = None) -> None:
    await ensure_group(client, keys.stream, keys.group)
    for i in range(n):
        await client.xadd(keys.stream, {"payload": f'{{"i": {i}}}'})
    envs = await read_group(client, keys.group, "c1", [keys.stream], count=n, block_ms=None)
    for env in envs:
        await schedule_retry(
            client, source_stream=env.source, group=keys.group, entry_id=env.entry_id,
            delayed_key=keys.delayed, due_ms=due_ms,
            fields=fields or retry_fields(env.fields, attempt=2, first_failed_at_ms=NOW - 1000,
                                          origin_entry_id=env.entry_id),
        )


async def test_move_due_moves_only_due_retries_and_says_when_the_next_is_due(
    aredis: aioredis.Redis, uid: str
) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    await _park(aredis, keys, 2, NOW)
    await _park(aredis, keys, 1, NOW + 30_000)

    moved, next_due = await move_due(aredis, delayed_key=keys.delayed, retry_stream=keys.retry,
                                     now_ms=NOW)

    assert (moved, next_due) == (2, NOW + 30_000)
    assert await aredis.xlen(keys.retry) == 2
    assert await aredis.zcard(keys.delayed) == 1
    assert await move_due(aredis, delayed_key=keys.delayed, retry_stream=keys.retry,
                          now_ms=NOW + 29_999) == (0, NOW + 30_000)
    assert await move_due(aredis, delayed_key=keys.delayed, retry_stream=keys.retry,
                          now_ms=NOW + 30_000) == (1, None)
    assert await aredis.zcard(keys.delayed) == 0


async def test_move_due_preserves_every_field_even_binary_ones(
    aredis: aioredis.Redis, uid: str
) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    fields = {b"payload": b'{"q": "\xc3\xa9\\n"}', b"id": b"m1", b"attempt": b"3",
              b"first_failed_at": str(NOW).encode(), b"origin_entry_id": b"1-0",
              b"blob": b"\xff\x00\xfe\"", b"x-empty": b""}
    await _park(aredis, keys, 1, NOW, fields=fields)

    await move_due(aredis, delayed_key=keys.delayed, retry_stream=keys.retry, now_ms=NOW)

    [(_, moved)] = await aredis.xrange(keys.retry)
    assert moved == fields


async def test_move_due_respects_its_limit(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    await _park(aredis, keys, 5, NOW)

    first = await move_due(aredis, delayed_key=keys.delayed, retry_stream=keys.retry,
                           now_ms=NOW, limit=3)
    second = await move_due(aredis, delayed_key=keys.delayed, retry_stream=keys.retry,
                            now_ms=NOW, limit=3)

    assert (first, second) == ((3, NOW), (2, None))
    assert await aredis.xlen(keys.retry) == 5


async def test_a_member_seawall_did_not_write_is_moved_not_stuck(
    aredis: aioredis.Redis, uid: str
) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    await aredis.zadd(keys.delayed, {"not json": NOW})

    assert await move_due(aredis, delayed_key=keys.delayed, retry_stream=keys.retry,
                          now_ms=NOW) == (1, None)
    [(_, moved)] = await aredis.xrange(keys.retry)
    assert moved == {b"seawall_bad_delayed_member": b"not json"}


async def test_move_due_on_an_empty_zset(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")

    assert await move_due(aredis, delayed_key=keys.delayed, retry_stream=keys.retry,
                          now_ms=NOW) == (0, None)
    assert await aredis.exists(keys.retry) == 0
