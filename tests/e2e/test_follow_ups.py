"""Follow-up events a handler publishes with ``ctx.publish`` get ids derived from the
message being handled, the same on every attempt. So when a step fails after publishing
and is retried, the event it publishes again is a duplicate by id, and an idempotent
handler downstream runs it once; a handler that is not idempotent runs it twice (which is
what shows the test can tell the two apart). A fallback's follow-ups get ids of their own."""

from __future__ import annotations

from collections import Counter

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_none

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
async def test_a_step_retried_after_publishing_sends_the_same_event_id_again(
        lab: Lab, aredis: aioredis.Redis, kind: str) -> None:
    orders, payments = lab.stream("orders"), lab.stream("payments")
    charge, reserve, audit = lab.name("charge"), lab.name("reserve"), lab.name("audit")
    runs: Counter[str] = Counter()
    published: list[tuple[int, str]] = []

    # Given a step (an async handler, or a plain def in the pool's threads) that publishes
    # its event and then fails on its first attempt (as if it crashed between the two),
    # with two handlers downstream, one idempotent,
    policy = {"stop": stop_after_attempt(3), "wait": wait_none(), "breaker": None}
    if kind == "async":
        @lab.app.handler(orders, name=charge, **policy)
        async def charge_order(order: Order, ctx: Context) -> None:
            published.append((ctx.attempt, await ctx.publish(payments, Payment(n=order.n))))
            if ctx.attempt == 1:
                raise ConnectionError("lost the connection after publishing")
    else:
        @lab.app.handler(orders, name=charge, **policy)
        def charge_order_in_a_thread(order: Order, ctx: Context) -> None:
            published.append((ctx.attempt, ctx.publish_sync(payments, Payment(n=order.n))))
            if ctx.attempt == 1:
                raise ConnectionError("lost the connection after publishing")

    @lab.app.handler(payments, name=reserve, idempotent=True, breaker=None)
    async def reserve_stock(payment: Payment, ctx: Context) -> None:
        runs[reserve] += 1

    @lab.app.handler(payments, name=audit, breaker=None)
    async def audit_payment(payment: Payment, ctx: Context) -> None:
        runs[audit] += 1

    # when an order goes through,
    mid = await lab.app.apublish(orders, Order(n=1))
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: runs[audit] == 2, within=10, what="both payment events")
        await pool.until(lambda: runs[reserve] == 1, within=5, what="the reservation")

        async def settled() -> bool:
            views = [await where(aredis, lab.keys(h)) for h in (charge, reserve, audit)]
            return views == [Where()] * 3

        await pool.until(settled, within=5, what="every ack")

    # then both attempts published an event with the same id, derived from the order,
    expected = follow_up_id(mid, charge, payments, 0)
    assert published == [(1, expected), (2, expected)]
    entries = await aredis.xrange(payments)
    assert [fields[b"id"].decode() for _, fields in entries] == [expected, expected]
    assert {fields[b"causation_id"].decode() for _, fields in entries} == {mid}
    assert {fields[b"correlation_id"].decode() for _, fields in entries} == {mid}
    # and the idempotent handler ran once, the other twice; nothing is left anywhere.
    assert runs == Counter({reserve: 1, audit: 2})


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
