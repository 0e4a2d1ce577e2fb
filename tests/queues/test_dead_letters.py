"""Dead letters against a real Redis: dead_letter.lua, replay.lua, reading and purging."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from queues.dead_letters import (
    METADATA_FIELDS,
    TRACEBACK_LIMIT,
    count_by_error_type,
    count_dead_letters,
    dead_letter,
    dead_letter_fields,
    get_dead_letter,
    iter_dead_letters,
    list_dead_letters,
    parse_dead_letter,
    purge,
    replay,
)
from queues.envelope import Envelope
from queues.keys import HandlerKeys
from queues.streams import ensure_group, read_group

NOW = 1_700_000_000_000


def _fields(env: Envelope, *, error_type: str = "ValueError", attempts: int = 3,
            traceback: str = "Traceback...\nValueError: bad", failed_at_ms: int = NOW
            ) -> dict[bytes, bytes]:
    return dead_letter_fields(
        env.fields, handler="billing.charge", stream="orders",
        origin_entry_id=env.origin_entry_id, attempts=attempts, error_type=error_type,
        error="bad", traceback=traceback, first_failed_at_ms=NOW - 60_000,
        failed_at_ms=failed_at_ms, consumer="host-1:123:0", host="host-1",
        reason="attempts exhausted",
    )


async def _deliver(client: aioredis.Redis, keys: HandlerKeys, n: int = 1,
                   extra: dict[str, str] | None = None) -> list[Envelope]:
    """Given ``n`` messages delivered to the handler and not yet acked."""
    await ensure_group(client, keys.stream, keys.group)
    for i in range(n):
        await client.xadd(keys.stream, {"payload": f'{{"i": {i}}}', "id": f"m{i}",
                                        "attempt": "1", **(extra or {})})
    return await read_group(client, keys.group, "c1", [keys.stream], count=n, block_ms=None)


async def _dead(client: aioredis.Redis, keys: HandlerKeys, n: int = 1,
                error_types: list[str] | None = None) -> list[str]:
    """Given ``n`` dead letters; returns their ids, oldest first."""
    for i, env in enumerate(await _deliver(client, keys, n)):
        error_type = error_types[i] if error_types else "ValueError"
        assert await dead_letter(client, source_stream=env.source, group=keys.group,
                                 entry_id=env.entry_id, dlq_key=keys.dlq,
                                 fields=_fields(env, error_type=error_type))
    return [r[0].decode() for r in await client.xrange(keys.dlq)]


def test_dead_letter_fields_keep_the_original_and_bound_the_traceback() -> None:
    env = Envelope("orders", "5-0", {b"payload": b"{}", b"x-tenant": b"acme",
                                     b"dlq_stale": b"old"})

    out = _fields(env, traceback="x" * 10_000 + "the end")

    assert out[b"payload"] == b"{}"
    assert out[b"x-tenant"] == b"acme"
    assert b"dlq_stale" not in out
    assert {k.decode() for k in out if k.startswith(b"dlq_")} == set(METADATA_FIELDS)
    assert len(out[b"dlq_traceback"]) == TRACEBACK_LIMIT
    assert out[b"dlq_traceback"].endswith(b"the end")
    assert out[b"dlq_entry_id"] == b"5-0"


async def test_dead_letter_acks_and_appends_in_one_step(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    [env] = await _deliver(aredis, keys, extra={"x-tenant": "acme"})

    moved = await dead_letter(aredis, source_stream=env.source, group=keys.group,
                              entry_id=env.entry_id, dlq_key=keys.dlq, fields=_fields(env))

    assert moved is True
    assert (await aredis.xpending(keys.stream, keys.group))["pending"] == 0
    [(dlq_id, raw)] = await aredis.xrange(keys.dlq)
    letter = parse_dead_letter(dlq_id, raw)
    assert letter.origin_entry_id == env.entry_id
    assert letter.attempts == 3
    assert letter.error_type == "ValueError"
    assert letter.failed_at_ms == NOW
    assert letter.first_failed_at_ms == NOW - 60_000
    assert letter.reason == "attempts exhausted"
    assert letter.message_id == "m0"
    assert letter.fields == env.fields
    assert letter.payload_json() == {"i": 0}


async def test_a_batch_puts_shared_parts_and_own_fields_together(
    aredis: aioredis.Redis, uid: str
) -> None:
    from queues import scripts
    from queues.commit import pack_fields
    from queues.dead_letters import (
        Pairs,
        failure_pairs,
        pack_constant,
        pack_failure,
        pack_letter,
        queue_dead_letters,
    )

    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    wide = {f"x-{i}": f"v{i}" for i in range(300)}  # (unpacked in chunks)
    envs = [*await _deliver(aredis, keys, 4), *await _deliver(aredis, keys, 1, extra=wide)]
    await aredis.xack(keys.stream, keys.group, envs[3].entry_id)
    constant = pack_constant(handler="billing.charge", stream="orders",
                             consumer="host-1:123:0", host="host-1")
    common = {"error": "bad", "traceback": "Traceback...\nValueError: bad",
              "reason": "attempts exhausted"}

    def own(env: Envelope, failure: int, rest: Pairs | None = None) -> bytes:
        return pack_letter(env.fields, entry_id=env.entry_id, failure=failure,
                           origin_entry_id=env.origin_entry_id, attempts=3,
                           first_failed_at_ms=NOW - 60_000, failed_at_ms=NOW, rest=rest)

    # Given one batch: two letters sharing a part (packed binary), one with a part (packed
    # as text) of its own, one whose entry was acked meanwhile, and one with every field in
    # the letter, 300 of them its own,
    value_error = pack_failure(constant, error_type="ValueError", **common)
    key_error = pack_fields({b"dlq_handler": b"billing.charge", b"dlq_stream": b"orders",
                             b"dlq_consumer": b"host-1:123:0", b"dlq_host": b"host-1",
                             b"dlq_error_type": b"KeyError", b"dlq_error": b"bad",
                             b"dlq_traceback": b"Traceback...\nValueError: bad",
                             b"dlq_reason": b"attempts exhausted"})
    letters = [
        (1, value_error, own(envs[0], 1)),
        (7, key_error, own(envs[1], 7)),
        (1, value_error, own(envs[2], 1)),
        (0, b"", own(envs[3], 0, failure_pairs(constant, error_type="ValueError", **common))),
        (0, b"", own(envs[4], 0, failure_pairs(constant, error_type="OSError", **common))),
    ]
    await scripts.load_all(aredis)
    pipe = aredis.pipeline(transaction=False)
    queue_dead_letters(pipe, source_stream=keys.stream, group=keys.group, dlq_key=keys.dlq,
                       letters=letters)
    [reply] = await pipe.execute()

    # then every pending one is a dead letter with all its fields, in the batch's order,
    assert [r is not None for r in reply] == [True, True, True, False, True]
    raw = await aredis.xrange(keys.dlq)
    assert [dict(f) for _, f in raw] == [
        _fields(envs[0]), _fields(envs[1], error_type="KeyError"), _fields(envs[2]),
        _fields(envs[4], error_type="OSError")]
    assert len(raw[3][1]) == 300 + 3 + len(METADATA_FIELDS)
    # counted by error type, and nothing is left pending.
    assert await aredis.hgetall(keys.dlq_counts) == {
        b"ValueError": b"2", b"KeyError": b"1", b"OSError": b"1"}
    assert (await aredis.xpending(keys.stream, keys.group))["pending"] == 0


async def test_a_letter_to_copy_takes_its_fields_from_the_entry_as_stored(
    aredis: aioredis.Redis, uid: str
) -> None:
    from queues import scripts
    from queues.dead_letters import copy_letter, pack_constant, pack_failure, queue_dead_letters

    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    envs = [*await _deliver(aredis, keys, 3),
            *await _deliver(aredis, keys, 1, extra={"dlq_error": "stale", "x-h": "1"})]
    constant = pack_constant(handler="billing.charge", stream="orders",
                             consumer="host-1:123:0", host="host-1")
    shared = pack_failure(constant, error_type="ValueError", error="bad",
                          traceback="Traceback...\nValueError: bad",
                          reason="attempts exhausted")

    def copied(env: Envelope) -> tuple[int, bytes, bytes]:
        return 1, shared, copy_letter(entry_id=env.entry_id, failure=1,
                                      origin_entry_id=env.origin_entry_id, attempts=3,
                                      first_failed_at_ms=NOW - 60_000, failed_at_ms=NOW)

    # Given letters that carry only their metadata: one whose entry is pending as read, one
    # whose entry was deleted from the stream while pending, one already acked, and one
    # whose entry holds a stale dlq_* field,
    await aredis.xdel(keys.stream, envs[1].entry_id)
    await aredis.xack(keys.stream, keys.group, envs[2].entry_id)
    await scripts.load_all(aredis)
    pipe = aredis.pipeline(transaction=False)
    queue_dead_letters(pipe, source_stream=keys.stream, group=keys.group, dlq_key=keys.dlq,
                       letters=[copied(env) for env in envs])
    [reply] = await pipe.execute()

    # then the first and the last are dead letters with the fields the entry holds (the
    # stale one dropped), as if the pool had sent them,
    assert [type(r) for r in reply] == [bytes, int, type(None), bytes] and reply[1] == 0
    raw = await aredis.xrange(keys.dlq)
    stale_free = Envelope(envs[3].source, envs[3].entry_id,
                          {k: v for k, v in envs[3].fields.items() if k != b"dlq_error"})
    assert [dict(f) for _, f in raw] == [_fields(envs[0]), _fields(stale_free)]
    # the deleted one is left pending for the pool to send again with its fields (reply 0),
    # and only the two are counted.
    pending = await aredis.xpending_range(keys.stream, keys.group, "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [envs[1].entry_id]
    assert await aredis.hgetall(keys.dlq_counts) == {b"ValueError": b"2"}


async def test_dead_letter_refuses_an_entry_already_acked(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    [env] = await _deliver(aredis, keys)
    await aredis.xack(keys.stream, keys.group, env.entry_id)

    moved = await dead_letter(aredis, source_stream=env.source, group=keys.group,
                              entry_id=env.entry_id, dlq_key=keys.dlq, fields=_fields(env))

    assert moved is False
    assert await aredis.exists(keys.dlq) == 0


async def test_dead_letter_drop_source_deletes_from_the_retry_stream(
    aredis: aioredis.Redis, uid: str
) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    await ensure_group(aredis, keys.retry, keys.group)
    await aredis.xadd(keys.retry, {"payload": "{}", "attempt": "5"})
    [env] = await read_group(aredis, keys.group, "c1", [keys.retry], count=1, block_ms=None)

    assert await dead_letter(aredis, source_stream=env.source, group=keys.group,
                             entry_id=env.entry_id, dlq_key=keys.dlq, fields=_fields(env),
                             drop_source=True)

    assert await aredis.xlen(keys.retry) == 0
    assert await aredis.xlen(keys.dlq) == 1


async def test_replay_moves_to_the_retry_stream_with_attempt_reset(
    aredis: aioredis.Redis, uid: str
) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    [env] = await _deliver(aredis, keys, extra={"x-tenant": "acme"})
    env.fields.update({b"attempt": b"5", b"first_failed_at": str(NOW).encode()})
    await dead_letter(aredis, source_stream=env.source, group=keys.group,
                      entry_id=env.entry_id, dlq_key=keys.dlq, fields=_fields(env))
    [(raw_id, _)] = await aredis.xrange(keys.dlq)
    dlq_id = raw_id.decode()

    replayed = await replay(aredis, dlq_key=keys.dlq, retry_stream=keys.retry,
                            entry_ids=[dlq_id])

    assert replayed == [dlq_id]
    assert await aredis.xlen(keys.dlq) == 0
    assert await aredis.xlen(keys.stream) == 1, "replay never re-XADDs to the user's stream"
    [(_, fields)] = await aredis.xrange(keys.retry)
    assert fields == {
        b"payload": b'{"i": 0}', b"id": b"m0", b"x-tenant": b"acme", b"attempt": b"1",
        b"origin_entry_id": env.entry_id.encode(), b"replayed_from": dlq_id.encode(),
    }


async def test_replay_skips_missing_ids_and_twice_doubles_nothing(
    aredis: aioredis.Redis, uid: str
) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    ids = await _dead(aredis, keys, 3)

    # A replay killed after the first batch, then run again over every id.
    first = await replay(aredis, dlq_key=keys.dlq, retry_stream=keys.retry, entry_ids=ids[:1])
    second = await replay(aredis, dlq_key=keys.dlq, retry_stream=keys.retry,
                          entry_ids=[*ids, "1-1"])
    third = await replay(aredis, dlq_key=keys.dlq, retry_stream=keys.retry, entry_ids=ids)

    assert first == ids[:1]
    assert second == ids[1:]
    assert third == []
    assert await aredis.xlen(keys.retry) == 3
    assert await aredis.xlen(keys.dlq) == 0


async def test_replay_in_batches(aredis: aioredis.Redis, uid: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    ids = await _dead(aredis, keys, 5)
    monkeypatch.setattr("queues.dead_letters.BATCH", 2)

    assert await replay(aredis, dlq_key=keys.dlq, retry_stream=keys.retry, entry_ids=ids) == ids
    assert await aredis.xlen(keys.retry) == 5


async def test_replay_rejects_something_that_is_not_an_id(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")

    with pytest.raises(ValueError, match="not a stream entry id"):
        await replay(aredis, dlq_key=keys.dlq, retry_stream=keys.retry, entry_ids=["abc"])


async def test_list_filters_by_error_type_time_and_limit(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    types = ["ValueError", "KeyError", "ValueError", "ValueError", "KeyError"]
    ids = await _dead(aredis, keys, 5, error_types=types)

    every = await list_dead_letters(aredis, dlq_key=keys.dlq)
    assert [d.entry_id for d in every] == ids
    value_errors = await list_dead_letters(aredis, dlq_key=keys.dlq, error_type="ValueError")
    assert [d.entry_id for d in value_errors] == [ids[0], ids[2], ids[3]]
    newest = await list_dead_letters(aredis, dlq_key=keys.dlq, limit=2, newest_first=True)
    assert [d.entry_id for d in newest] == [ids[4], ids[3]]
    ms = int(ids[2].split("-")[0])
    since = await list_dead_letters(aredis, dlq_key=keys.dlq, since_ms=ms)
    assert ids[2] in [d.entry_id for d in since]
    assert all(int(d.entry_id.split("-")[0]) >= ms for d in since)
    until = await list_dead_letters(aredis, dlq_key=keys.dlq, until_ms=ms - 1)
    assert all(int(d.entry_id.split("-")[0]) < ms for d in until)
    assert await count_dead_letters(aredis, dlq_key=keys.dlq) == 5
    assert await count_dead_letters(aredis, dlq_key=keys.dlq, error_type="KeyError") == 2
    assert await count_by_error_type(aredis, dlq_key=keys.dlq) == {"ValueError": 3, "KeyError": 2}


async def test_listing_pages_through_a_long_stream(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    ids = await _dead(aredis, keys, 7)

    async def ids_of(**kw: object) -> list[str]:
        return [d.entry_id async for d in iter_dead_letters(aredis, dlq_key=keys.dlq,
                                                             page_size=2, **kw)]  # type: ignore[arg-type]

    assert await ids_of() == ids
    assert await ids_of(newest_first=True) == ids[::-1]
    assert await ids_of(limit=5) == ids[:5]


async def test_get_and_purge(aredis: aioredis.Redis, uid: str) -> None:
    keys = HandlerKeys(f"orders-{uid}", f"h-{uid}")
    ids = await _dead(aredis, keys, 3)

    letter = await get_dead_letter(aredis, dlq_key=keys.dlq, entry_id=ids[1])
    assert letter is not None and letter.entry_id == ids[1]
    assert await purge(aredis, dlq_key=keys.dlq, entry_ids=[ids[0], ids[1], "9-9"]) == 2
    assert await get_dead_letter(aredis, dlq_key=keys.dlq, entry_id=ids[1]) is None
    assert [d.entry_id for d in await list_dead_letters(aredis, dlq_key=keys.dlq)] == ids[2:]


def test_an_entry_without_metadata_parses_as_empty_not_an_error() -> None:
    letter = parse_dead_letter(b"1700000000000-0", {b"payload": b"not json"})

    assert letter.error_type == ""
    assert letter.failed_at_ms == 1_700_000_000_000
    assert letter.payload_json() == "not json"
    assert letter.to_dict()["payload"] == "not json"


def _binary_pairs(blob: bytes) -> dict[bytes, bytes]:
    """fields_lib.lua's binary packing read back: a zero byte, the number of pairs, then
    each name and value as a 4-byte big-endian length and its bytes."""
    assert blob[0] == 0
    count, at, values = int.from_bytes(blob[1:5], "big"), 5, []
    for _ in range(count * 2):
        length = int.from_bytes(blob[at:at + 4], "big")
        values.append(blob[at + 4:at + 4 + length])
        at += 4 + length
    assert at == len(blob)
    return dict(zip(values[::2], values[1::2], strict=True))


def test_a_packed_dead_letter_holds_the_same_fields_as_the_dict() -> None:
    from queues.dead_letters import (
        pack_constant,
        pack_dead_letter,
        pack_failure,
        pack_letter,
        pack_pairs,
    )

    original = {b"payload": b'{"n": 1}', b"id": b"m1", b"dlq_error": b"stale"}
    common = {"handler": "billing.charge", "stream": "orders", "consumer": "c1", "host": "h"}
    per = {"origin_entry_id": "1-0", "attempts": 3, "error_type": "ValueError",
           "error": "bad \u2713", "traceback": "Traceback...", "first_failed_at_ms": None,
           "failed_at_ms": 1700, "reason": "attempts exhausted"}
    expected = dead_letter_fields(original, **common, **per)
    constant = pack_constant(**common)

    # packed whole (the saga scripts' dead letters),
    whole = pack_dead_letter(original, constant, **per)
    # and in two parts, the one every message failing alike shares and the message's own
    # (dead_letter.lua puts them together),
    shared = pack_failure(constant, error_type="ValueError", error="bad \u2713",
                          traceback="Traceback...", reason="attempts exhausted")
    own = pack_letter(original, entry_id="7-0", failure=3, origin_entry_id="1-0", attempts=3,
                      first_failed_at_ms=None, failed_at_ms=1700)

    assert _binary_pairs(whole) == expected == _binary_pairs(pack_pairs(expected))
    # (a letter: its shared part's number, where its original fields are (0: in it), its
    # entry id, then its fields' pairs)
    assert int.from_bytes(own[:2], "big") == 3 and own[2] == 0
    assert own[3:7] == (3).to_bytes(4, "big") and own[7:10] == b"7-0"
    fields = _binary_pairs(b"\0" + own[10:])
    assert {**fields, **_binary_pairs(shared)} == expected
    assert not set(fields) & set(_binary_pairs(shared))
