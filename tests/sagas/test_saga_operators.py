"""What an operator meets and does, in a pool in the test's process against the real Redis:
a compensation that fails for good leaves its saga ``failed`` with one dead letter and the
chain stopped, and ``resume`` (retry, or skip a step undone by hand) takes it on to
``compensated``; a compensation whose breaker is open keeps its saga ``compensating``,
the compensation waiting in its stream, until the breaker closes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e.failure_helpers import Lab, PoolRun, where
from redis.exceptions import ResponseError
from saga_checks import (
    compensated,
    dead_letters,
    effects,
    hear_outcomes,
    leftovers,
    outcomes,
    settled,
    states,
    until_final,
)
from saga_helpers import Checkout, Memo, Order, Service, checkout_saga, cleanup_saga
from tenacity import stop_after_attempt, wait_none

from queues import breaker_store, saga_store
from sagas import Saga
from workers.breaker import CircuitBreaker
from workers.context import Context

pytestmark = pytest.mark.slow


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 16}


def _abort_at_ship(world: Checkout) -> None:
    def out_of_stock(order: Order, ctx: Context) -> None:
        raise ctx.saga.abort("out of stock")

    world.fail["ship"] = out_of_stock


def _undo_reserve_fails(order: Order, ctx: Context) -> None:
    raise ConnectionError("the warehouse is down")


@pytest.mark.parametrize("action", ["retry", "skip"])
async def test_a_compensation_failing_for_good_fails_the_saga_until_an_operator_resumes_it(
        lab: Lab, aredis: aioredis.Redis, action: str) -> None:
    world = checkout_saga(lab, aredis, attempts=2)
    heard = hear_outcomes(world.saga)
    undo_reserve = f"{world.saga.name}.reserve.undo"
    layout = world.saga.runtime.layout
    try:
        # Given a saga whose last step aborts, and reserve's compensation fails every time,
        _abort_at_ship(world)
        world.fail["undo reserve"] = _undo_reserve_fails
        assert await world.saga.start(Order(n=1), saga_id="s1")
        async with PoolRun(lab.app) as pool:
            # when it turns back,
            assert await until_final(aredis, world.saga, ["s1"], within=10,
                                     alive=pool.check) == {"s1": "failed"}
            # then it is failed, at reserve's compensation, with exactly one dead letter,
            ledger = await saga_store.ledger(aredis, world.saga.keys, "s1")
            assert (ledger["cause"], ledger["failed_step"]) == ("compensation_failed",
                                                                "reserve")
            assert await dead_letters(aredis, world.saga) == {undo_reserve: 1}
            # and the chain stopped there: charge's compensation was never sent.
            assert await aredis.xlen(world.saga.keys.undo("charge")) == 0
            seen = await effects(world.service)
            assert seen["s1"].journal == ["do charge", "do reserve"]
            await pool.until(lambda: heard, within=10, what="the failed outcome")
            assert [(o.state, o.failed_step) for o in heard] == [("failed", "reserve")]
            # Resuming anything but the failed step is refused, saying why.
            with pytest.raises(ResponseError, match="reserve"):
                await saga_store.resume(aredis, layout, "s1", action="skip", step="charge",
                                        now_ms=int(time.time() * 1000))

            # When an operator resumes it: the warehouse is back and reserve's compensation
            # is retried, or a person undid reserve by hand and skips it,
            del world.fail["undo reserve"]
            assert await saga_store.resume(
                aredis, layout, "s1", action=action, step="reserve" if action == "skip" else "",
                note="refunded by hand", now_ms=int(time.time() * 1000)) == "reserve"
            # then it finishes compensated:
            assert await until_final(aredis, world.saga, ["s1"], within=10,
                                     alive=pool.check) == {"s1": "compensated"}
            await pool.until(lambda: len(heard) == 2, within=10, what="the second outcome")
            await pool.until(lambda: settled(aredis, world.saga), within=10,
                             what="nothing left in the saga's streams")

        seen = await effects(world.service)
        ledger = await saga_store.ledger(aredis, world.saga.keys, "s1")
        if action == "retry":
            # reserve then charge undone, once each, in that order;
            assert seen["s1"].journal == compensated(["charge", "reserve"])
            assert seen["s1"].undone == {"reserve": 1, "charge": 1}
            assert ledger["step:reserve"] == "compensated"
        else:
            # reserve marked skipped (the service never undid it), charge undone once.
            assert seen["s1"].journal == ["do charge", "do reserve", "undo charge"]
            assert seen["s1"].undone == {"charge": 1}
            assert ledger["step:reserve"] == "skipped"
            assert ledger["note:reserve"] == "refunded by hand"
        assert ledger["step:charge"] == "compensated"
        # It keeps why it stopped going forward: ship aborted.
        assert (ledger["cause"], ledger["failed_step"]) == ("aborted", "ship")
        assert seen["s1"].applied == {"charge": 1, "reserve": 1}
        assert [o.state for o in heard] == ["failed", "compensated"]
        assert (await outcomes(aredis, world.saga))["s1"] == 2
        # The dead letter stays, the record of what failed; nothing else is left.
        assert await dead_letters(aredis, world.saga) == {undo_reserve: 1}
        assert await leftovers(aredis, world.saga) == {}
    finally:
        await cleanup_saga(aredis, world.saga)


def _checkout_with_breakers(lab: Lab, aredis: aioredis.Redis) -> Checkout:
    """The checkout saga whose compensations each have a circuit breaker."""
    streams = {s: lab.stream(s) for s in ("orders", "payments", "stock")}
    saga = Saga(lab.app, f"checkout{lab.uid}")
    world = Checkout(saga, Service(aredis, f"fail:{lab.uid}:svc:"), streams)
    policy: dict[str, Any] = {"stop": stop_after_attempt(2), "wait": wait_none()}

    async def run(step: str, order: Order, ctx: Context, then: str | None) -> None:
        hook = world.fail.get(step)
        if hook is not None:
            hook(order, ctx)
        await world.service.apply(step, ctx.saga.key)
        ctx.saga.remember(Memo(n=order.n, key=ctx.saga.key))
        if then is not None:
            await ctx.publish(then, order)

    @saga.step(streams["orders"], breaker=None, **policy)
    async def charge(order: Order, ctx: Context) -> None:
        await run("charge", order, ctx, streams["payments"])

    @saga.step(streams["payments"], breaker=None, **policy)
    async def reserve(order: Order, ctx: Context) -> None:
        await run("reserve", order, ctx, streams["stock"])

    @saga.step(streams["stock"], breaker=None, **policy)
    async def ship(order: Order, ctx: Context) -> None:
        await run("ship", order, ctx, None)

    for step in (charge, reserve, ship):
        def undo_of(name: str) -> Any:
            async def undo(memo: Memo, ctx: Context) -> None:
                await world.service.undo(name, memo.key)
            undo.__name__ = f"undo_{name}"
            return undo
        step.compensate(undo_of(step.name), breaker=CircuitBreaker(), **policy)
    return world


async def test_a_compensation_behind_an_open_breaker_waits_until_it_closes(
        lab: Lab, aredis: aioredis.Redis) -> None:
    world = _checkout_with_breakers(lab, aredis)
    heard = hear_outcomes(world.saga)
    undo_reserve = lab.app.handlers[f"{world.saga.name}.reserve.undo"].keys
    try:
        # Given the breaker of reserve's compensation forced open, and a saga whose last
        # step aborts,
        await breaker_store.force_open(aredis, undo_reserve)
        assert (await breaker_store.read_state(aredis, undo_reserve)).state == (
            breaker_store.FORCED_OPEN)
        _abort_at_ship(world)
        assert await world.saga.start(Order(n=1), saga_id="s1")
        async with PoolRun(lab.app) as pool:
            # when it turns back,
            await pool.until(lambda: _journal_is(world, ["do charge", "do reserve"]),
                             within=10, what="charge and reserve applied")
            await pool.until(lambda: _unread(aredis, undo_reserve), within=10,
                             what="reserve's compensation sent")
            # then it waits, compensating, with the compensation unread in its stream,
            # for as long as the breaker stays open;
            for _ in range(15):
                assert await states(aredis, world.saga, ["s1"]) == {"s1": "compensating"}
                assert await _unread(aredis, undo_reserve) == ["s1:undo:reserve"]
                assert (await effects(world.service))["s1"].undone == {}
                await asyncio.sleep(0.1)
            # and when the breaker closes, it finishes compensated.
            await breaker_store.force_close(aredis, undo_reserve)
            assert await until_final(aredis, world.saga, ["s1"], within=10,
                                     alive=pool.check) == {"s1": "compensated"}
            await pool.until(lambda: heard, within=10, what="the outcome")
            await pool.until(lambda: settled(aredis, world.saga), within=10,
                             what="nothing left in the saga's streams")
        seen = await effects(world.service)
        assert seen["s1"].journal == compensated(["charge", "reserve"])
        assert seen["s1"].applied == seen["s1"].undone == {"charge": 1, "reserve": 1}
        assert [o.state for o in heard] == ["compensated"]
        assert await dead_letters(aredis, world.saga) == {}
        assert await leftovers(aredis, world.saga) == {}
    finally:
        await cleanup_saga(aredis, world.saga)


async def _journal_is(world: Checkout, calls: list[str]) -> bool:
    seen = await effects(world.service)
    return "s1" in seen and seen["s1"].journal == calls


async def _unread(client: aioredis.Redis, keys: Any) -> list[str]:
    return (await where(client, keys)).unread
