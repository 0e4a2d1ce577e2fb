"""The seam around every handler call, in a pool running in the test's process: user
middleware sees every call with its outcome, in the documented order; an exception inside
a middleware is the message's failure, never the pool's crash; observers receive exactly
one settled outcome per message, of the right kind, for each of the six kinds."""

from __future__ import annotations

from collections import Counter

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_fixed, wait_none

from e2e.failure_helpers import Lab, PoolRun, Where, where
from queues import breaker_store
from queues.streams import ensure_group, read_group
from workers import CircuitBreaker, NonRetryable
from workers.context import Context
from workers.middleware import Call, Next
from workers.outcome import Kind, Outcome

pytestmark = pytest.mark.slow


class Order(BaseModel):
    n: int


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 4}


async def test_middleware_wraps_every_call_in_the_documented_order(
        lab: Lab, aredis: aioredis.Redis) -> None:
    orders, step = lab.stream("orders"), lab.name("step")
    trace: list[tuple[int, str]] = []

    def layer(name: str):  # type: ignore[no-untyped-def]
        async def middleware(call: Call, call_next: Next) -> Outcome:
            n = int(call.headers["n"])
            trace.append((n, f"{name}>"))
            outcome = await call_next(call)
            trace.append((n, f"<{name} {outcome.kind.value}"))
            return outcome
        return middleware

    # Given two app-wide middleware and one of the handler's own,
    lab.app.middleware(layer("app-1"))
    lab.app.middleware(layer("app-2"))

    @lab.app.handler(orders, name=step, middleware=[layer("own")], breaker=None,
                     stop=stop_after_attempt(1))
    async def handle(order: Order, ctx: Context) -> None:
        trace.append((order.n, "handler"))
        if order.n == 2:
            raise NonRetryable("no such order")

    # when one message succeeds and one fails for good,
    for n in (1, 2):
        await lab.app.apublish(orders, Order(n=n), headers={"n": str(n)})
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: len(trace) == 14, within=10, what="both calls")
        await pool.until(lambda: where(aredis, lab.keys(step)), within=1, what="a view")

    # then each call went app-1, app-2, own, handler and back out, each layer seeing the
    # outcome: ok for the first, dead_letter for the second.
    for n, kind in ((1, "ok"), (2, "dead_letter")):
        assert [t for m, t in trace if m == n] == [
            "app-1>", "app-2>", "own>", "handler",
            f"<own {kind}", f"<app-2 {kind}", f"<app-1 {kind}"]
    view = await where(aredis, lab.keys(step))
    assert len(view.dlq) == 1 and view.everywhere() == view.dlq


async def test_an_exception_in_a_middleware_fails_the_message_not_the_pool(
        lab: Lab, aredis: aioredis.Redis) -> None:
    orders, step = lab.stream("orders"), lab.name("step")
    handled: list[int] = []
    tried: Counter[int] = Counter()

    # Given a middleware that raises for one message, every time, before the handler,
    async def audit(call: Call, call_next: Next) -> Outcome:
        n = int(call.headers["n"])
        tried[n] += 1
        if n == 13:
            raise RuntimeError("the audit service refused message 13")
        return await call_next(call)

    @lab.app.handler(orders, name=step, middleware=[audit], breaker=None,
                     stop=stop_after_attempt(3), wait=wait_none())
    async def handle(order: Order) -> None:
        handled.append(order.n)

    # when twenty messages go through,
    for n in range(20):
        await lab.app.apublish(orders, Order(n=n), headers={"n": str(n)})
    async with PoolRun(lab.app) as pool:
        async def settled() -> Where | None:
            view = await where(aredis, lab.keys(step))
            return view if len(handled) == 19 and view.everywhere() == view.dlq == [
                view.dlq[0]] else None

        view = await pool.until(settled, within=10, what="19 handled, 1 dead-lettered")
        pool.check()  # the pool is still running

    # then message 13 was tried as its policy says (3 attempts) and dead-lettered with the
    # middleware's error; the handler never saw it; every other message was handled once.
    assert sorted(handled) == [n for n in range(20) if n != 13]
    assert tried[13] == 3
    [(_, letter)] = await aredis.xrange(lab.keys(step).dlq)
    assert letter[b"dlq_error_type"] == b"RuntimeError"
    assert b"audit service" in letter[b"dlq_error"]
    assert view.dlq == [letter[b"id"].decode()]


async def test_an_observer_hears_one_settled_outcome_per_message_of_each_kind(
        lab: Lab, aredis: aioredis.Redis) -> None:
    orders = lab.stream("orders")
    plain, flaky, broken, once, degraded, waiting = (
        lab.name(n) for n in ("plain", "flaky", "broken", "once", "degraded", "waiting"))
    heard: list[tuple[str, str, int, str | None]] = []

    # Given an observer, and six handlers on one stream, each meant to end one way:
    @lab.app.observe
    def record(call: Call, outcome: Outcome) -> None:
        assert call.duration >= 0
        heard.append((call.handler, outcome.kind.value, call.attempt, outcome.error_type))

    @lab.app.handler(orders, name=plain, breaker=None)
    async def ok(order: Order) -> None: ...

    @lab.app.handler(orders, name=flaky, breaker=None, stop=stop_after_attempt(2),
                     wait=wait_fixed(0.1))
    async def fails_once(order: Order, ctx: Context) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("flaky")

    @lab.app.handler(orders, name=broken, breaker=None)
    async def never(order: Order) -> None:
        raise NonRetryable("bad order")

    @lab.app.handler(orders, name=once, breaker=None, idempotent=True)
    async def done_before(order: Order) -> None:
        raise AssertionError("already completed: must not run")

    async def fallback(order: Order) -> None: ...

    @lab.app.handler(orders, name=degraded, breaker=CircuitBreaker(open_for=60),
                     fallback=fallback)
    async def behind_open_breaker(order: Order) -> None:
        raise AssertionError("breaker open: must not run")

    @lab.app.handler(orders, name=waiting, breaker=CircuitBreaker(open_for=60))
    async def parked(order: Order) -> None:
        raise AssertionError("breaker open: must not run")

    # (the idempotent one completed this message before; two breakers are forced open;
    # the last one's process had read the message just before its breaker opened, and
    # died: its restart finds it pending, and the open breaker parks it)
    mid = await lab.app.apublish(orders, Order(n=1))
    await aredis.set(lab.keys(once).done(mid), b"1")
    for name in (degraded, waiting):
        await breaker_store.force_open(aredis, lab.keys(name))
    await ensure_group(aredis, orders, lab.keys(waiting).group)
    assert await read_group(aredis, lab.keys(waiting).group, lab.consumer, [orders], count=1,
                            block_ms=None)

    # when one message goes through them all,
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: len(heard) >= 7, within=10, what="seven outcomes")
        await pool.until(lambda: where(aredis, lab.keys(plain)), within=1, what="a view")

    # then the observer heard each settled outcome once, with its kind, attempt and error.
    assert sorted(heard) == sorted([
        (plain, "ok", 1, None),
        (flaky, "retry", 1, "ConnectionError"),
        (flaky, "ok", 2, None),
        (broken, "dead_letter", 1, "NonRetryable"),
        (once, "skipped", 1, None),
        (degraded, "fallback", 1, None),
        (waiting, "parked", 1, None),
    ])
    # and Redis agrees: the parked message waits in the delayed set, the dead letter is
    # in the DLQ, the others are acked.
    assert (await where(aredis, lab.keys(waiting))).delayed == [mid]
    assert (await where(aredis, lab.keys(broken))).dlq == [mid]
    for name in (plain, flaky, once, degraded):
        assert await where(aredis, lab.keys(name)) == Where()
    # (every kind but a saga step's ``aborted``: tests/sagas/test_saga_flow.py hears that)
    assert {Kind(k) for _, k, _, _ in heard} == set(Kind) - {Kind.ABORTED}
