"""Payload limits end to end, against the real Redis: publishing over an app's
``max_payload_bytes`` raises ``PayloadTooLarge`` and writes nothing (one message, a batch,
a handler's follow-up, a saga's start); an entry over the limit that another producer
wrote is dead-lettered as ``MessageTooLarge`` without its payload (its size kept), its
handler never runs, it is never retried and the breaker does not count it, while the
messages around it are handled.

Every test ends by saying where every message is."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_none

from e2e.failure_helpers import NO_CLAIM, Lab, PoolRun, Where, dead_letters, where
from queues.breaker_store import CLOSED, read_state
from queues.envelope import encode
from sagas import Saga
from workers.app import App
from workers.breaker import CircuitBreaker
from workers.context import Context
from workers.errors import PayloadTooLarge

pytestmark = pytest.mark.slow

LIMIT = 1000


class Blob(BaseModel):
    n: int
    data: str = ""


def limited_app(lab: Lab, limit: int = LIMIT) -> App:
    app = lab.app = App(lab.app.name, redis_url=lab.redis_url, max_payload_bytes=limit)
    app.pool("default", claim_after=NO_CLAIM, concurrency=8)
    return app


def blob(n: int, size: int) -> dict[str, object]:
    """A payload of exactly ``size`` bytes of JSON."""
    base = len(f'{{"n":{n},"data":""}}')
    return {"n": n, "data": "x" * (size - base)}


async def test_publishing_over_the_limit_raises_and_writes_nothing(
        lab: Lab, aredis: aioredis.Redis) -> None:
    stream = lab.stream("orders")
    app = limited_app(lab)
    saga = Saga(app, f"big{lab.uid}")

    @saga.step(stream)
    async def first(order: Blob) -> None:
        pass

    # Given an app with a 1000-byte limit, a message of exactly 1000 bytes is published,
    await app.apublish(stream, blob(1, LIMIT))
    app.publish(stream, blob(2, LIMIT))
    # and one byte more is refused, naming the size and the limit, by every way in:
    with pytest.raises(PayloadTooLarge, match=r"1001 bytes .*max_payload_bytes=1000"):
        await app.apublish(stream, blob(3, LIMIT + 1))
    with pytest.raises(PayloadTooLarge):
        app.publish(stream, blob(3, LIMIT + 1))
    with pytest.raises(PayloadTooLarge):
        app.publish_many(stream, [blob(4, 10 + 20), blob(5, LIMIT + 1)])
    with pytest.raises(PayloadTooLarge):
        await app.apublish_many(stream, [blob(6, LIMIT * 5)])
    with pytest.raises(PayloadTooLarge):
        await saga.start(blob(7, LIMIT + 1), saga_id="s-big")
    # then nothing of the refused ones reached Redis (the batch neither: not even its small
    # first message), and the saga never started.
    assert [e[1][b"payload"] for e in await aredis.xrange(stream)] == [
        encode(blob(1, LIMIT))["payload"].encode(), encode(blob(2, LIMIT))["payload"].encode()]
    assert await aredis.xlen(saga.keys.on(stream)) == 0
    assert not [k async for k in aredis.scan_iter(match=f"seawall:{{{saga.keys.tag}}}:*")]


async def test_an_entry_over_the_limit_is_dead_lettered_without_its_payload(
        lab: Lab, aredis: aioredis.Redis) -> None:
    stream, name = lab.stream("orders"), lab.name("store")
    app = limited_app(lab)
    ran: list[int] = []

    # Given a handler (its breaker would open after 3 failures in 5 calls) on an app
    # accepting 1000 bytes,
    @app.handler(stream, name=name, stop=stop_after_attempt(3), wait=wait_none(),
                 breaker=CircuitBreaker(window=5, min_calls=3))
    async def store(item: Blob, ctx: Context) -> None:
        ran.append(item.n)

    keys = lab.keys(name)
    # when another producer (no limit of its own) writes entries of 2 MB among small ones,
    small = [await app.apublish(stream, blob(n, 100)) for n in range(3)]
    big: dict[str, int] = {}
    for n in range(10, 15):
        fields = encode(blob(n, 2_000_000), type="Blob", headers={"x-tenant": "acme"})
        await aredis.xadd(stream, fields)  # type: ignore[arg-type]
        big[str(fields["id"])] = n
    small.append(await app.apublish(stream, blob(3, LIMIT)))
    async with PoolRun(app) as pool:
        await pool.until(lambda: len(ran) == len(small), within=10, what="small handled")
        await pool.until(lambda: _holds(aredis, keys.dlq, len(big)), within=10,
                         what="the big ones dead-lettered")
        breaker = await read_state(aredis, keys)

    # then the handler ran for the small ones only,
    assert sorted(ran) == [0, 1, 2, 3]
    # each big one is one dead letter on its first attempt: the reason, its size and every
    # other field, but not its payload,
    letters = await dead_letters(aredis, keys)
    assert {f["id"] for _, f in letters} == set(big)
    for _, letter in letters:
        assert "payload" not in letter
        assert letter["payload_size"] == "2000000"
        assert letter["dlq_error_type"] == "MessageTooLarge"
        assert "2000000 bytes" in letter["dlq_error"] and "1000" in letter["dlq_error"]
        assert letter["dlq_reason"] == "payload too large"
        assert letter["dlq_attempts"] == "1"
        assert letter["type"] == "Blob" and letter["x-tenant"] == "acme"
        assert sum(len(v) for v in letter.values()) < 10_000
    # the breaker stayed closed (five refusals in a window of five would have opened it),
    assert breaker.state == CLOSED
    # and nothing is anywhere else.
    assert await where(aredis, keys) == Where(dlq=[f["id"] for _, f in letters])


async def test_a_follow_up_over_the_limit_fails_its_handler_and_is_never_sent(
        lab: Lab, aredis: aioredis.Redis) -> None:
    orders, shipments = lab.stream("orders"), lab.stream("shipments")
    name = lab.name("charge")
    app = limited_app(lab)

    # Given a handler whose follow-up is over the limit for one message,
    @app.handler(orders, name=name, breaker=None)
    async def charge(item: Blob, ctx: Context) -> None:
        await ctx.publish(shipments, blob(item.n, 50))
        await ctx.publish(shipments, blob(item.n, 5000 if item.n == 1 else 60))

    keys = lab.keys(name)
    ids = [await app.apublish(orders, {"n": n}) for n in range(3)]
    async with PoolRun(app) as pool:
        await pool.until(lambda: _holds(aredis, keys.dlq, 1), within=10, what="dead letter")
        await pool.until(lambda: _holds(aredis, shipments, 4), within=10, what="follow-ups")
        await pool.until(lambda: _nothing_but_dlq(aredis, keys), within=10, what="acks")

    # then that message is dead-lettered at once (retrying cannot shrink it), and none of
    # its follow-ups was sent, not even the first, small one; the others sent both.
    [(_, letter)] = await dead_letters(aredis, keys)
    assert letter["id"] == ids[1]
    assert letter["dlq_error_type"] == "PayloadTooLarge" and letter["dlq_attempts"] == "1"
    sent = [e[1][b"causation_id"].decode() for e in await aredis.xrange(shipments)]
    assert sorted(sent) == sorted([ids[0], ids[0], ids[2], ids[2]])
    assert await where(aredis, keys) == Where(dlq=[ids[1]])


async def _holds(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.xlen(key)) >= n


async def _nothing_but_dlq(client: aioredis.Redis, keys: object) -> bool:
    found = await where(client, keys)  # type: ignore[arg-type]
    return not (found.pending or found.unread or found.retry or found.delayed)
