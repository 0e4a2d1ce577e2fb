"""When handlers fail: retries follow the handler's tenacity policy as durable delayed
redeliveries (the due time is in the delayed zset, read here, not timed), a message that
keeps failing ends as exactly one dead letter with its history, messages that can never
succeed (bad schema, not JSON, no payload) are dead-lettered at once, ``Retry(delay=)``
overrides the wait, and a handler past its timeout fails with ``HandlerTimeout``.

Each test runs a real pool in this process against the real Redis, and ends by saying
where every message is: completed, pending, unread, in the retry stream, delayed, or
dead-lettered; none missing. Breakers are off (``breaker=None``): they have tests of
their own, and here every failure must reach the retry policy."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_exponential, wait_fixed

from e2e.failure_helpers import DelayedWatch, Lab, PoolRun, Where, dead_letters, where
from queues.keys import HandlerKeys
from workers.context import Context
from workers.errors import Retry

pytestmark = pytest.mark.slow


class Order(BaseModel):
    n: int


class Boom(Exception):
    pass


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 8}


def ms(seconds: float) -> int:
    return int(seconds * 1000)


async def test_a_handler_failing_twice_then_succeeding_backs_off_as_its_policy_says(
    lab: Lab, aredis: aioredis.Redis,
) -> None:
    stream, name = lab.stream("orders"), lab.name("flaky")
    calls: list[tuple[str, int, float]] = []
    """(message id, ctx.attempt, time.time() at the call)"""
    failed_at: dict[int, int] = {}
    """attempt -> ms just before it raised"""
    completed: list[str] = []

    # Given a handler that fails twice, with exponential backoff: 0.4 s, then 0.8 s,
    @lab.app.handler(stream, name=name, stop=stop_after_attempt(5),
                     wait=wait_exponential(multiplier=0.4), breaker=None)
    async def flaky(order: Order, ctx: Context) -> None:
        calls.append((ctx.message_id, ctx.attempt, time.time()))
        if ctx.attempt < 3:
            failed_at[ctx.attempt] = ms(time.time())
            raise ConnectionError(f"payment service down (attempt {ctx.attempt})")
        completed.append(ctx.message_id)

    keys = lab.keys(name)
    # when one message is published,
    mid = await lab.app.apublish(stream, {"n": 1})
    async with DelayedWatch(aredis, keys) as watch, PoolRun(lab.app) as pool:
        await pool.until(lambda: completed, within=10, what="the third attempt")
        await pool.until(lambda: _settled(aredis, keys), within=5, what="the ack")

    # then it was handled once successfully, on its third attempt,
    assert completed == [mid]
    assert [(m, a) for m, a, _ in calls] == [(mid, 1), (mid, 2), (mid, 3)]
    # each retry waited in the delayed zset for the policy's wait after its failure
    # (0.4 s, then twice that), and was not run before it was due.
    assert set(watch.seen) == {(mid, 2), (mid, 3)}
    first_wait = watch.seen[(mid, 2)] - failed_at[1]
    second_wait = watch.seen[(mid, 3)] - failed_at[2]
    assert 400 <= first_wait < 400 + 150, first_wait
    assert 800 <= second_wait < 800 + 150, second_wait
    assert ms(calls[1][2]) >= watch.seen[(mid, 2)]
    assert ms(calls[2][2]) >= watch.seen[(mid, 3)]
    # Nothing is left anywhere: not pending, not delayed, not in the retry stream.
    assert await where(aredis, keys) == Where()


async def _settled(client: aioredis.Redis, keys: HandlerKeys) -> bool:
    """Nothing of this handler's is anywhere but done."""
    return not (await where(client, keys)).everywhere()


async def test_a_handler_that_always_fails_is_tried_stop_times_then_dead_lettered_once(
    lab: Lab, aredis: aioredis.Redis,
) -> None:
    stream = lab.stream("orders")
    failing, audit = lab.name("charge"), lab.name("audit")
    charge_calls: list[tuple[str, int]] = []
    audit_calls: list[tuple[str, int]] = []

    # Given a handler that always raises, tried 3 times 0.2 s apart, and a second handler
    # on the same stream that works,
    @lab.app.handler(stream, name=failing, stop=stop_after_attempt(3), wait=wait_fixed(0.2),
                     breaker=None)
    async def charge(order: Order, ctx: Context) -> None:
        charge_calls.append((ctx.message_id, ctx.attempt))
        raise Boom(f"order {order.n} cannot be charged")

    @lab.app.handler(stream, name=audit, breaker=None)
    async def record(order: Order, ctx: Context) -> None:
        audit_calls.append((ctx.message_id, ctx.attempt))

    keys, audit_keys = lab.keys(failing), lab.keys(audit)
    # when one message is published,
    mid = await lab.app.apublish(stream, {"n": 7})
    [(entry_id, _)] = await aredis.xrange(stream)
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: aredis.xlen(keys.dlq), within=10, what="the dead letter")
        await pool.until(lambda: _settled(aredis, audit_keys), within=5, what="audit's ack")

    # then the failing handler ran exactly 3 times, attempts 1, 2, 3,
    assert charge_calls == [(mid, 1), (mid, 2), (mid, 3)]
    # and the message is one dead letter, with the whole story,
    [(_, letter)] = await dead_letters(aredis, keys)
    assert letter["id"] == mid and letter["payload"] == '{"n":7}'
    assert letter["dlq_handler"] == failing and letter["dlq_stream"] == stream
    assert letter["dlq_entry_id"] == entry_id.decode()
    assert letter["dlq_attempts"] == "3"
    assert letter["dlq_error_type"] == "Boom"
    assert letter["dlq_error"] == "order 7 cannot be charged"
    assert 'raise Boom(f"order {order.n} cannot be charged")' in letter["dlq_traceback"]
    assert letter["dlq_traceback"].rstrip().endswith("Boom: order 7 cannot be charged")
    assert letter["dlq_reason"].startswith("attempts exhausted: 3 attempts")
    assert letter["dlq_consumer"] == lab.consumer
    assert int(letter["dlq_first_failed_at"]) <= int(letter["dlq_failed_at"])
    # and nowhere else;
    assert await where(aredis, keys) == Where(dlq=[mid])
    # the other handler handled it once and only once: it never saw the retries.
    assert audit_calls == [(mid, 1)]
    assert await where(aredis, audit_keys) == Where()
    assert await aredis.xlen(audit_keys.retry) == 0, "its retry stream was never written"
    assert not await aredis.exists(audit_keys.delayed, audit_keys.dlq)


async def test_messages_that_can_never_succeed_are_dead_lettered_at_once(
    lab: Lab, aredis: aioredis.Redis,
) -> None:
    stream, name = lab.stream("orders"), lab.name("strict")
    handled: list[tuple[str, int]] = []

    # Given a handler with a generous retry policy,
    @lab.app.handler(stream, name=name, stop=stop_after_attempt(5), wait=wait_fixed(0.2),
                     breaker=None)
    async def strict(order: Order, ctx: Context) -> None:
        handled.append((ctx.message_id, ctx.attempt))

    keys = lab.keys(name)
    # when entries arrive that cannot be an Order (written by any producer, raw XADD),
    bad: dict[str, dict[str, str | bytes]] = {
        "bad-schema": {"payload": '{"n": "seven"}', "id": "bad-schema"},
        "not-json": {"payload": b"not json", "id": "not-json"},
        "not-utf8": {"payload": b"\xff\xfe", "id": "not-utf8"},
        "no-payload": {"id": "no-payload", "type": "Order"},
    }
    entry_of = {mid: (await aredis.xadd(stream, fields)).decode()  # type: ignore[arg-type]
                for mid, fields in bad.items()}
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: _dlq_len(aredis, keys.dlq, 4), within=10,
                         what="four dead letters")
        # and good messages are published after them,
        good = [await lab.app.apublish(stream, {"n": n}) for n in range(5)]
        await pool.until(lambda: len(handled) == 5, within=10, what="the good messages")
        await pool.until(lambda: _dlq_only(aredis, keys, set(bad)), within=5,
                         what="the acks")

    # then each bad one is a dead letter after its first attempt, with the reason,
    letters = {f["id"]: f for _, f in await dead_letters(aredis, keys)}
    assert set(letters) == set(bad)
    for mid, letter in letters.items():
        assert letter["dlq_attempts"] == "1", mid
        assert letter["dlq_entry_id"] == entry_of[mid], mid
    expected = {
        "bad-schema": ("ValidationError", "invalid payload: validation failed", "n\n"),
        "not-json": ("ValidationError", "undecodable payload: not valid JSON", "Invalid JSON"),
        "not-utf8": ("ValidationError", "undecodable payload: not valid JSON", "Invalid JSON"),
        "no-payload": ("EnvelopeError", "invalid message: not a seawall envelope",
                       "entry has no 'payload' field"),
    }
    for mid, (error_type, reason, error) in expected.items():
        letter = letters[mid]
        assert (letter["dlq_error_type"], letter["dlq_reason"]) == (error_type, reason), mid
        assert error in letter["dlq_error"], (mid, letter["dlq_error"])
    # byte for byte, so a replay would be exact,
    raw = {f[b"id"].decode(): f for _, f in await aredis.xrange(keys.dlq)}
    assert raw["not-utf8"][b"payload"] == b"\xff\xfe"
    assert raw["not-json"][b"payload"] == b"not json"
    assert b"payload" not in raw["no-payload"]
    # the handler never ran for them, and handled every good one, once, on attempt 1.
    assert sorted(handled) == sorted((mid, 1) for mid in good)
    assert await where(aredis, keys) == Where(dlq=list(letters))


async def _dlq_len(client: aioredis.Redis, dlq: str, n: int) -> bool:
    return int(await client.xlen(dlq)) == n


async def _dlq_only(client: aioredis.Redis, keys: HandlerKeys, dead: set[str]) -> bool:
    """The messages ``dead`` are dead letters, and nothing else is anywhere but done."""
    place = await where(client, keys)
    return set(place.everywhere()) == dead == set(place.dlq)


async def test_retry_with_a_delay_schedules_the_message_that_far_ahead(
    lab: Lab, aredis: aioredis.Redis,
) -> None:
    stream, name = lab.stream("orders"), lab.name("later")
    calls: list[tuple[int, float]] = []
    failed_at: list[int] = []

    # Given a handler whose policy would wait 30 s, but which asks for 0.5 s,
    @lab.app.handler(stream, name=name, stop=stop_after_attempt(3), wait=wait_fixed(30),
                     breaker=None)
    async def later(order: Order, ctx: Context) -> None:
        calls.append((ctx.attempt, time.time()))
        if ctx.attempt == 1:
            failed_at.append(ms(time.time()))
            raise Retry("inventory not synced yet", delay=0.5)

    keys = lab.keys(name)
    mid = await lab.app.apublish(stream, {"n": 1})
    async with DelayedWatch(aredis, keys) as watch, PoolRun(lab.app) as pool:
        await pool.until(lambda: len(calls) == 2, within=10, what="the second attempt")
        await pool.until(lambda: _settled(aredis, keys), within=5, what="the ack")

    # then the retry was due 0.5 s after the failure, and ran then, not before.
    assert set(watch.seen) == {(mid, 2)}
    due = watch.seen[(mid, 2)]
    assert 500 <= due - failed_at[0] < 500 + 150, due - failed_at[0]
    assert [a for a, _ in calls] == [1, 2]
    assert ms(calls[1][1]) >= due
    assert await where(aredis, keys) == Where()


async def test_a_handler_past_its_timeout_fails_is_retried_then_dead_lettered(
    lab: Lab, aredis: aioredis.Redis,
) -> None:
    stream, name = lab.stream("orders"), lab.name("hung")
    started: list[tuple[int, float]] = []
    cancelled: list[tuple[int, float]] = []
    finished: list[int] = []

    # Given a handler with a 0.3 s timeout that would take 5 s, tried twice,
    @lab.app.handler(stream, name=name, timeout=0.3, stop=stop_after_attempt(2),
                     wait=wait_fixed(0.2), breaker=None)
    async def hung(order: Order, ctx: Context) -> None:
        started.append((ctx.attempt, time.monotonic()))
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append((ctx.attempt, time.monotonic()))
            raise
        finished.append(ctx.attempt)

    keys = lab.keys(name)
    mid = await lab.app.apublish(stream, {"n": 1})
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: aredis.xlen(keys.dlq), within=10, what="the dead letter")
        await pool.until(lambda: _dlq_only(aredis, keys, {mid}), within=5, what="the ack")

    # then each attempt was cut off after ~0.3 s (not left to run 5 s),
    assert [a for a, _ in started] == [1, 2] == [a for a, _ in cancelled]
    assert finished == []
    for (_, began), (_, ended) in zip(started, cancelled, strict=True):
        assert 0.3 <= ended - began < 1.5
    # retried once as the policy says, then dead-lettered as a HandlerTimeout.
    [(_, letter)] = await dead_letters(aredis, keys)
    assert letter["id"] == mid
    assert letter["dlq_error_type"] == "HandlerTimeout"
    assert "ran longer than 0.3s" in letter["dlq_error"]
    assert letter["dlq_attempts"] == "2"
    assert letter["dlq_reason"].startswith("attempts exhausted: 2 attempts")
    assert await where(aredis, keys) == Where(dlq=[mid])
