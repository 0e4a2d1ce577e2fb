"""Outcome counts against a real Redis: pools add, ``status`` and the demo read. Each test
uses handler names of its own and deletes its fields afterwards (the hash is shared)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from queues import outcome_counts
from queues.keys import OUTCOMES


@pytest.fixture
def handlers(uid: str, sync_redis: redis.Redis) -> Iterator[tuple[str, str]]:
    names = (f"billing.charge-{uid}", f"email.confirm-{uid}")
    yield names
    fields = [outcome_counts.field(name, kind) for name in names for kind in outcome_counts.KINDS]
    sync_redis.hdel(OUTCOMES, *fields)


def mine(counts: dict[str, dict[str, int]], names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    return {name: counts[name] for name in names if name in counts}


async def test_added_counts_accumulate_per_handler_and_kind(
        aredis: aioredis.Redis, sync_redis: redis.Redis, handlers: tuple[str, str]) -> None:
    billing, email = handlers
    # Given two pools' flushes, the second adding to the first,
    await outcome_counts.add(aredis, {(billing, "ok"): 5, (billing, "retry"): 2,
                                      (email, "ok"): 7})
    await outcome_counts.add(aredis, {(billing, "ok"): 3, (billing, "dead_letter"): 1,
                                      (email, "skipped"): 1})
    # then both readers see the totals, by handler, then kind.
    expected = {billing: {"ok": 8, "retry": 2, "dead_letter": 1},
                email: {"ok": 7, "skipped": 1}}
    assert mine(outcome_counts.read_sync(sync_redis), handlers) == expected
    assert mine(await outcome_counts.read(aredis), handlers) == expected
    assert sync_redis.hget(OUTCOMES, f"{billing}\x1fok") == b"8"


async def test_nothing_is_sent_when_there_is_nothing_to_add(
        handlers: tuple[str, str]) -> None:
    billing, _ = handlers
    # A client whose server does not answer: add() must not even try.
    unreachable = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        await outcome_counts.add(unreachable, {})
        await outcome_counts.add(unreachable, {(billing, "ok"): 0})
    finally:
        await unreachable.aclose()


async def test_unknown_kinds_and_ambiguous_handler_names_are_refused(
        aredis: aioredis.Redis, sync_redis: redis.Redis, handlers: tuple[str, str]) -> None:
    billing, _ = handlers
    with pytest.raises(ValueError, match="unknown outcome kind 'done'"):
        await outcome_counts.add(aredis, {(billing, "ok"): 1, (billing, "done"): 1})
    with pytest.raises(ValueError, match="free of"):
        await outcome_counts.add(aredis, {(f"{billing}\x1fok", "ok"): 1})
    # Nothing of a refused batch was added.
    assert mine(outcome_counts.read_sync(sync_redis), handlers) == {}


def test_fields_that_are_not_counts_are_skipped_when_read(
        sync_redis: redis.Redis, handlers: tuple[str, str]) -> None:
    billing, email = handlers
    sync_redis.hset(OUTCOMES, mapping={f"{billing}\x1fok": 3, f"{email}\x1fok": "many"})
    try:
        assert mine(outcome_counts.read_sync(sync_redis), handlers) == {billing: {"ok": 3}}
    finally:
        sync_redis.hdel(OUTCOMES, f"{email}\x1fok")


def test_parse_splits_at_the_last_separator() -> None:
    raw = {b"a.b\x1fok": b"1", b"a.b\x1fretry": b"2", b"no-separator": b"3", b"\x1fok": b"4"}
    assert outcome_counts.parse(raw) == {"a.b": {"ok": 1, "retry": 2}}
