"""Follow-up events a handler publishes with ``ctx.publish`` are committed with its ack:
an attempt that fails has published nothing anyone can see, and the attempt that succeeds
makes each visible exactly once. Their ids are derived from the message being handled, the
same on every attempt; a fallback's follow-ups get ids of their own."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_fixed

from e2e.failure_helpers import Lab, PoolRun, Where, where
from queues import breaker_store
from queues.envelope import follow_up_id
from workers import CircuitBreaker
from workers.context import Context

pytestmark = pytest.mark.slow


class Order(BaseModel):
    n: int


class Payment(BaseModel):
    n: int


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 8}


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_follow_ups_of_a_failing_attempt_are_never_seen_and_the_success_sends_each_once(
        lab: Lab, aredis: aioredis.Redis, kind: str) -> None:
    orders, payments, audits = (lab.stream("orders"), lab.stream("payments"),
                                lab.stream("audits"))
    charge, reserve = lab.name("charge"), lab.name("reserve")
    attempts: list[int] = []
    published: list[tuple[int, list[str]]] = []
    reserved: list[str] = []

    # Given a step (an async handler, or a plain def in the pool's threads) that publishes
    # two follow-ups, one to each of two streams, and then fails on its first two attempts,
    policy = {"stop": stop_after_attempt(3), "wait": wait_fixed(0.4), "breaker": None}
    if kind == "async":
        @lab.app.handler(orders, name=charge, **policy)
        async def charge_order(order: Order, ctx: Context) -> None:
            attempts.append(ctx.attempt)
            ids = [await ctx.publish(payments, Payment(n=order.n)),
                   await ctx.publish(audits, Payment(n=order.n))]
            published.append((ctx.attempt, ids))
            if ctx.attempt < 3:
                raise ConnectionError("lost the connection after publishing")
    else:
        @lab.app.handler(orders, name=charge, **policy)
        def charge_order_in_a_thread(order: Order, ctx: Context) -> None:
            attempts.append(ctx.attempt)
            ids = [ctx.publish_sync(payments, Payment(n=order.n)),
                   ctx.publish_sync(audits, Payment(n=order.n))]
            published.append((ctx.attempt, ids))
            if ctx.attempt < 3:
                raise ConnectionError("lost the connection after publishing")

    @lab.app.handler(payments, name=reserve, breaker=None)
    async def reserve_stock(payment: Payment, ctx: Context) -> None:
        reserved.append(ctx.message_id)

    # when an order goes through, watching the target streams with a raw client,
    mid = await lab.app.apublish(orders, Order(n=1))
    seen_before_success: list[int] = []
    async with PoolRun(lab.app) as pool:
        async def succeeded() -> bool:
            if 3 not in attempts:
                seen_before_success.append(await aredis.xlen(payments)
                                           + await aredis.xlen(audits))
                return False
            return len(reserved) == 1 and await aredis.xlen(audits) == 1

        await pool.until(succeeded, within=15, interval=0.02, what="the third attempt")

        async def settled() -> bool:
            return [await where(aredis, lab.keys(h)) for h in (charge, reserve)] == [Where()] * 2

        await pool.until(settled, within=5, what="every ack")

    # then while the failing attempts ran, neither follow-up was ever visible,
    assert attempts == [1, 2, 3]
    assert len(seen_before_success) > 10 and set(seen_before_success) == {0}
    # every attempt staged the same two ids, derived from the order,
    expected = [follow_up_id(mid, charge, payments, 0), follow_up_id(mid, charge, audits, 0)]
    assert published == [(1, expected), (2, expected), (3, expected)]
    # and after the success each appears exactly once, naming its cause.
    for stream, event_id in zip((payments, audits), expected, strict=True):
        entries = await aredis.xrange(stream)
        assert [fields[b"id"].decode() for _, fields in entries] == [event_id]
        assert entries[0][1][b"causation_id"].decode() == mid
        assert entries[0][1][b"correlation_id"].decode() == mid
    assert reserved == [expected[0]]
    assert await aredis.xlen(lab.keys(charge).outbox) == 0


async def test_follow_up_ids_differ_by_order_stream_and_for_the_fallback(
        lab: Lab, aredis: aioredis.Redis) -> None:
    orders, payments, notices = (lab.stream("orders"), lab.stream("payments"),
                                 lab.stream("notices"))
    step = lab.name("step")
    ids: list[str] = []
    degraded: list[tuple[str, str]] = []
    """(message id, the fallback's event id)"""

    # Given a handler that publishes two events to one stream and one to another, and a
    # fallback that publishes to the first stream too,
    async def fallback(order: Order, ctx: Context) -> None:
        degraded.append((ctx.message_id, await ctx.publish(payments, Payment(n=order.n))))

    @lab.app.handler(orders, name=step, fallback=fallback,
                     breaker=CircuitBreaker(open_for=60))
    async def publish_three(order: Order, ctx: Context) -> None:
        ids.append(await ctx.publish(payments, Payment(n=order.n)))
        ids.append(await ctx.publish(payments, Payment(n=order.n)))
        ids.append(await ctx.publish(notices, Payment(n=order.n)))
        ids.append(await ctx.publish(notices, Payment(n=order.n), message_id=f"mine-{order.n}"))

    # when one order is handled, then an operator forces the breaker open and orders keep
    # coming (a process may read one more batch before it hears of the change),
    first = await lab.app.apublish(orders, Order(n=1))
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: len(ids) == 4, within=10, what="the handler's events")
        await breaker_store.force_open(aredis, lab.keys(step))

        async def fallback_ran() -> bool:
            await lab.app.apublish(orders, Order(n=2))
            return bool(degraded)

        await pool.until(fallback_ran, within=10, interval=0.1, what="the fallback's event")

    # then each follow-up has its own id, the one given explicitly is kept, and the
    # fallback's event does not take the id the handler's first event would have had.
    assert ids[:4] == [follow_up_id(first, step, payments, 0),
                       follow_up_id(first, step, payments, 1),
                       follow_up_id(first, step, notices, 0), "mine-1"]
    assert len(set(ids[:4])) == 4
    cause, event_id = degraded[0]
    assert event_id == follow_up_id(cause, f"{step}:fallback", payments, 0)
    assert event_id != follow_up_id(cause, step, payments, 0)
