"""Signed messages end to end, in real pools against the real Redis: an app with
``signing_keys`` handles what was signed under one of its keys and dead-letters the rest
as ``SignatureError`` (unsigned, tampered with, under an unknown key, under a known id
with another secret, copied from another stream) without running its handler, retrying
or tripping its breaker; a retried, relayed, replayed or saga message still verifies; a
forged event naming a running saga does not touch it; and keys rotate under traffic with
no message lost.

Every test ends by saying where every message is: handled, or dead-lettered, none
anywhere else."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_none

from e2e.failure_helpers import (
    NO_CLAIM,
    Lab,
    PoolRun,
    Where,
    dead_letters,
    run_dlq,
    where,
)
from queues.breaker_store import CLOSED, read_state
from queues.envelope import encode
from queues.keys import PROCESSES, HandlerKeys
from queues.streams import ensure_group, read_group
from workers.app import App
from workers.breaker import CircuitBreaker
from workers.context import Context
from workers.errors import NonRetryable
from workers.integrity import Integrity

pytestmark = pytest.mark.slow

K1 = "k1-0123456789abcdef0123456789abcdef"
K2 = b"k2-\x00\x01\x02" + bytes(range(200, 240))
ELSEWHERE = "the same id, another secret: 0123456789"


class Order(BaseModel):
    n: int


def signing_app(lab: Lab, name: str | None = None, *, claim_after: float = NO_CLAIM,
                **options: Any) -> App:
    """An app of the test's own (so the lab cleans its keys up), with ``options``."""
    app = App(name or lab.app.name, redis_url=lab.redis_url, **options)
    app.pool("default", claim_after=claim_after, concurrency=8)
    return app


async def test_only_messages_signed_under_a_known_key_reach_the_handler(
        lab: Lab, aredis: aioredis.Redis) -> None:
    stream, other, name = lab.stream("orders"), lab.stream("refunds"), lab.name("charge")
    handled: list[str] = []
    # Given an app that signs with k1 and accepts k1 and k2, whose handler has a breaker
    # that would open after 3 failures in 5 calls,
    app = lab.app = signing_app(lab, signing_keys={"k2": K2, "k1": K1}, sign_with="k1")

    @app.handler(stream, name=name, breaker=CircuitBreaker(window=5, min_calls=3))
    async def charge(order: Order, ctx: Context) -> None:
        handled.append(ctx.message_id)

    keys = lab.keys(name)
    # when it publishes good messages, and other producers write bad ones to the stream:
    good = [await app.apublish(stream, {"n": i}) for i in range(4)]
    rejected: dict[str, str] = {}

    async def raw(fields: dict[str, str | bytes], why: str) -> None:
        await aredis.xadd(stream, fields)  # type: ignore[arg-type]
        rejected[str(fields["id"])] = why

    await raw(encode({"n": 10}), "not signed")                         # unsigned
    tampered = encode({"n": 11})
    app.integrity.seal(stream, tampered)
    tampered["payload"] = '{"n":11000}'
    await raw(tampered, "does not match")                               # payload changed
    retyped = encode({"n": 12}, type="Order")
    app.integrity.seal(stream, retyped)
    retyped["type"] = "Refund"
    await raw(retyped, "does not match")                                # a header changed
    copied = encode({"n": 13})
    app.integrity.seal(other, copied)
    await raw(copied, "does not match")                                 # signed for refunds
    stranger = App("stranger", signing_keys={"k9": K1})
    unknown = encode({"n": 14})
    stranger.integrity.seal(stream, unknown)
    await raw(unknown, "'k9', which this app does not have")            # unknown key id
    impostor = App("impostor", signing_keys={"k1": ELSEWHERE})
    forged = encode({"n": 15})
    impostor.integrity.seal(stream, forged)
    await raw(forged, "does not match")                                 # k1, wrong secret
    for i in range(3):  # and a few more unsigned ones: more than the breaker's window
        await raw(encode({"n": 20 + i}), "not signed")
    good.append(await app.apublish(stream, {"n": 99}))

    async with PoolRun(app) as pool:
        await pool.until(lambda: len(handled) == len(good), within=10, what="good handled")
        await pool.until(lambda: aredis.xlen(keys.dlq), within=10, what="dead letters")
        await pool.until(lambda: _count(aredis, keys.dlq, len(rejected)), within=10,
                         what="every refusal dead-lettered")
        breaker = await read_state(aredis, keys)

    # then the handler ran for the signed messages only, once each,
    assert sorted(handled) == sorted(good)
    # every other one is one dead letter, a SignatureError saying why, on its first
    # attempt (never retried),
    letters = {f["id"]: f for _, f in await dead_letters(aredis, keys)}
    assert set(letters) == set(rejected)
    for mid, why in rejected.items():
        letter = letters[mid]
        assert letter["dlq_error_type"] == "SignatureError", letter
        assert why in letter["dlq_error"], (why, letter["dlq_error"])
        assert letter["dlq_reason"] == "signature rejected"
        assert letter["dlq_attempts"] == "1"
    # the breaker did not count them (it is closed, its window holds the good calls only),
    assert breaker.state == CLOSED
    assert len(breaker.window) <= len(good)
    # and nothing is anywhere else.
    assert await where(aredis, keys) == Where(dlq=sorted(rejected, key=list(letters).index))


async def test_entries_taken_over_from_a_dead_consumer_are_checked_one_by_one(
        lab: Lab, aredis: aioredis.Redis) -> None:
    """A batch read by the pool is checked as it is read; entries it claims from a dead
    consumer were never in such a batch, and are checked when they run."""
    stream, name = lab.stream("orders"), lab.name("charge")
    handled: list[str] = []
    app = lab.app = signing_app(lab, claim_after=0.5, signing_keys={"k1": K1})

    @app.handler(stream, name=name, breaker=None)
    async def charge(order: Order, ctx: Context) -> None:
        handled.append(ctx.message_id)

    keys = lab.keys(name)
    # Given signed and unsigned messages that a consumer read and then died with,
    signed = [await app.apublish(stream, {"n": i}) for i in range(3)]
    unsigned = []
    for i in range(2):
        fields = encode({"n": 10 + i})
        await aredis.xadd(stream, fields)  # type: ignore[arg-type]
        unsigned.append(str(fields["id"]))
    await ensure_group(aredis, stream, keys.group)
    taken = await read_group(aredis, keys.group, "gone", [stream], count=10, block_ms=None)
    assert len(taken) == 5
    assert await where(aredis, keys) == Where(pending=dict.fromkeys(signed + unsigned, 1))

    # when a pool takes them over,
    async with PoolRun(app) as pool:
        await pool.until(lambda: len(handled) == 3, within=15, what="the signed ones")
        await pool.until(lambda: _count(aredis, keys.dlq, 2), within=10,
                         what="the unsigned ones dead-lettered")
        await pool.until(lambda: _only_dead_letters(aredis, keys), within=10,
                         what="all acked")

    # then the signed ones ran once each, the others are SignatureError dead letters,
    # and nothing is anywhere else.
    assert sorted(handled) == sorted(signed)
    letters = {f["id"]: f for _, f in await dead_letters(aredis, keys)}
    assert sorted(letters) == sorted(unsigned)
    assert {f["dlq_error_type"] for f in letters.values()} == {"SignatureError"}
    assert await where(aredis, keys) == Where(dlq=list(letters))


async def test_a_batch_check_that_fails_leaves_each_entry_to_be_checked_alone(
        lab: Lab, aredis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the check of a whole batch raises, the pool goes on: each entry of that
    batch is checked when it runs, and ends handled or dead-lettered."""
    stream, name = lab.stream("orders"), lab.name("charge")
    handled: list[str] = []
    app = lab.app = signing_app(lab, signing_keys={"k1": K1})

    @app.handler(stream, name=name, breaker=None)
    async def charge(order: Order, ctx: Context) -> None:
        handled.append(ctx.message_id)

    class BatchCheckFails:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __call__(self, envelope: Any) -> Any:
            return self.inner(envelope)

        def check_all(self, envelopes: Any) -> None:
            raise MemoryError("no room for a batch's verdicts")

    admission = Integrity.admission
    monkeypatch.setattr(Integrity, "admission",
                        lambda self, stream: BatchCheckFails(admission(self, stream)))
    keys = lab.keys(name)
    # Given signed and unsigned messages, and a batch check that always fails,
    signed = [await app.apublish(stream, {"n": i}) for i in range(3)]
    unsigned = []
    for i in range(2):
        fields = encode({"n": 10 + i})
        await aredis.xadd(stream, fields)  # type: ignore[arg-type]
        unsigned.append(str(fields["id"]))

    # when a pool reads them,
    async with PoolRun(app) as pool:
        await pool.until(lambda: len(handled) == 3, within=10, what="the signed ones")
        await pool.until(lambda: _only_dead_letters(aredis, keys), within=10,
                         what="all acked")

    # then the signed ones ran once each, the unsigned ones are SignatureError dead
    # letters, and nothing is anywhere else.
    assert sorted(handled) == sorted(signed)
    letters = {f["id"]: f for _, f in await dead_letters(aredis, keys)}
    assert sorted(letters) == sorted(unsigned)
    assert {f["dlq_error_type"] for f in letters.values()} == {"SignatureError"}
    assert await where(aredis, keys) == Where(dlq=list(letters))


async def _only_dead_letters(client: aioredis.Redis, keys: HandlerKeys) -> bool:
    now = await where(client, keys)
    return now.everywhere() == now.dlq


async def _count(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.xlen(key)) >= n


async def test_retried_relayed_and_replayed_messages_still_verify(
        lab: Lab, aredis: aioredis.Redis, redis_url: str) -> None:
    orders, shipments = lab.stream("orders"), lab.stream("shipments")
    name, ship_name = lab.name("charge"), lab.name("ship")
    app = lab.app = signing_app(lab, signing_keys={"k1": K1})
    attempts: dict[str, list[int]] = {}
    shipped: list[str] = []
    give_up = {"on": True}

    # Given a signing app whose handler fails once on every message (retried), for good
    # on n=2 while give_up is on (dead-lettered), and otherwise publishes a follow-up
    # (another stream, so through the outbox) that a second handler receives,
    @app.handler(orders, name=name, stop=stop_after_attempt(3), wait=wait_none(),
                 breaker=None)
    async def charge(order: Order, ctx: Context) -> None:
        attempts.setdefault(ctx.message_id, []).append(ctx.attempt)
        if ctx.attempt == 1 and "replayed_from" not in ctx.headers:
            raise ConnectionError("flaky on the first attempt")
        if order.n == 2 and give_up["on"]:
            raise NonRetryable("not now")
        await ctx.publish(shipments, {"n": order.n})

    @app.handler(shipments, name=ship_name, breaker=None)
    async def ship(order: Order, ctx: Context) -> None:
        shipped.append(ctx.headers["causation_id"])

    keys, ship_keys = lab.keys(name), lab.keys(ship_name)
    ids = [await app.apublish(orders, {"n": n}) for n in range(4)]
    async with PoolRun(app) as pool:
        # when they run (retries, one dead letter),
        await pool.until(lambda: len(shipped) == 3, within=15, what="three follow-ups")
        await pool.until(lambda: aredis.xlen(keys.dlq), within=10, what="the dead letter")
        [(_, letter)] = await dead_letters(aredis, keys)
        assert letter["dlq_error_type"] == "NonRetryable"  # not a SignatureError
        # and the dead letter is replayed once its cause is gone,
        give_up["on"] = False
        done = await run_dlq(redis_url, "replay", "--handler", name, "--all", "--yes")
        assert done.returncode == 0, done.stderr
        await pool.until(lambda: len(shipped) == 4, within=15, what="the replayed one")
        await pool.until(lambda: _empty(aredis, keys, ship_keys), within=10,
                         what="everything settled")

    # then every message was handled on its retry (or its replay), its follow-up verified
    # and handled once, and no signature was refused anywhere.
    assert sorted(shipped) == sorted(ids)
    assert all(a[:2] == [1, 2] for a in attempts.values()), attempts
    assert await where(aredis, keys) == Where()
    assert await where(aredis, ship_keys) == Where()


async def _empty(client: aioredis.Redis, *keys: HandlerKeys) -> bool:
    for k in keys:
        if (await where(client, k)).everywhere():
            return False
    return True


async def test_keys_rotate_under_traffic_without_losing_a_message(
        lab: Lab, aredis: aioredis.Redis) -> None:
    stream, name = lab.stream("orders"), lab.name("charge")
    handled: dict[str, int] = {}

    def consumer(label: str, keys: dict[str, str | bytes], sign_with: str) -> App:
        # (claim_after: what a stopped pool had fetched but not started waits for a
        # successor of another name, as it would after a rolling update across hosts)
        app = signing_app(lab, f"{lab.app.name}-{label}", claim_after=2.0,
                          signing_keys=keys, sign_with=sign_with)

        @app.handler(stream, name=name, breaker=None)
        async def charge(order: Order, ctx: Context) -> None:
            handled[ctx.message_id] = handled.get(ctx.message_id, 0) + 1

        return app

    old = consumer("a", {"k1": K1}, "k1")
    both = consumer("b", {"k1": K1, "k2": K2}, "k1")
    new = consumer("c", {"k2": K2}, "k2")
    lab.app = old  # (cleans the handler's keys up)
    producers = {"k1": App("producer", redis_url=lab.redis_url, signing_keys={"k1": K1}),
                 "k2": App("producer", redis_url=lab.redis_url,
                           signing_keys={"k1": K1, "k2": K2}, sign_with="k2")}
    signer = {"now": "k1"}
    published: list[str] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        """A producer publishing all along, with whichever key it is told."""
        for n in itertools.count():
            if stop.is_set():
                return
            published.append(await producers[signer["now"]].apublish(stream, {"n": n}))
            await asyncio.sleep(0.005)

    keys = lab.keys(name)
    try:
        async with PoolRun(old) as first:
            # Given consumers with k1 and a producer signing with k1, under traffic,
            sender = asyncio.create_task(traffic())
            await first.until(lambda: len(handled) >= 20, within=10, what="traffic")
            # 1. consumers learn k2 (a rolling restart: the new pool starts, the old stops),
            rolled = PoolRun(both)
            await rolled.__aenter__()
        await rolled.until(lambda: len(handled) >= len(published) - 5 and len(handled) >= 40,
                           within=10, what="traffic through the second consumers")
        # 2. producers switch to k2,
        signer["now"] = "k2"
        k2_from = len(published)
        await rolled.until(lambda: len(published) >= k2_from + 20 and all(
            m in handled for m in published[:k2_from + 20]), within=10, what="k2 traffic")
        # 3. once nothing signed with k1 waits, consumers drop k1.
        async with PoolRun(new) as last:
            await rolled.__aexit__(None, None, None)
            await last.until(lambda: len(published) >= k2_from + 60, within=10,
                             what="traffic through the last consumers")
            stop.set()
            await sender
            await last.until(lambda: set(published) <= set(handled), within=10,
                             what="every message handled")
            await last.until(lambda: _empty(aredis, keys), within=10, what="all acked")
    finally:
        stop.set()
        for app in (both, new, *producers.values()):
            await app.aclose()
        mine = [f for f in await aredis.hkeys(PROCESSES)
                if f.decode().startswith(f"{lab.app.name}-")]
        if mine:
            await aredis.hdel(PROCESSES, *mine)

    # then every message published with either key was handled, none dead-lettered,
    assert set(handled) == set(published)
    assert len(published) > k2_from > 0
    assert await aredis.xlen(keys.dlq) == 0
    # once each (a rolling restart hands nothing over twice when it stops cleanly).
    assert set(handled.values()) == {1}
    assert await where(aredis, keys) == Where()
