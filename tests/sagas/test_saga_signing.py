"""Sagas on a signing app, in a pool in the test's process against the real Redis: the
start, each step's events (signed again once they carry the saga's fields) and the
compensations go through, sagas complete and compensate; a forged event naming a running
saga is dead-lettered as a ``SignatureError`` and leaves the saga alone (it is no step
failure: nothing is compensated)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e.failure_helpers import NO_CLAIM, Lab, PoolRun, dead_letters
from saga_helpers import STEPS, Checkout, checkout_saga, cleanup_saga
from saga_helpers import Order as SagaOrder

from queues import saga_store
from queues.envelope import encode
from workers.app import App
from workers.context import Context

pytestmark = pytest.mark.slow

K1 = "k1-0123456789abcdef0123456789abcdef"
ELSEWHERE = "the same id, another secret: 0123456789"


async def _count(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.xlen(key)) >= n


@pytest.fixture
async def signed_checkout(lab: Lab, aredis: aioredis.Redis) -> AsyncIterator[Checkout]:
    lab.app = App(lab.app.name, redis_url=lab.redis_url, signing_keys={"k1": K1})
    lab.app.pool("default", claim_after=NO_CLAIM, concurrency=16)
    world = checkout_saga(lab, aredis)
    yield world
    await cleanup_saga(aredis, world.saga)


async def _final(pool: PoolRun, world: Checkout, ids: list[str]) -> dict[str, str]:
    async def final() -> dict[str, str] | None:
        states: dict[str, str] = await world.states(ids)
        return states if all(s in saga_store.FINAL for s in states.values()) else None

    return await pool.until(final, within=20, interval=0.05, what="every saga final")


async def test_a_signing_apps_sagas_complete_and_compensate(
        lab: Lab, aredis: aioredis.Redis, signed_checkout: Checkout) -> None:
    def fail(order: Any, ctx: Context) -> None:
        if order.n == 2:
            raise ctx.saga.abort("out of stock")

    signed_checkout.fail["ship"] = fail
    # Given the checkout saga on a signing app, when one saga runs through and one fails
    # at its last step,
    await signed_checkout.saga.start(SagaOrder(n=1), saga_id="s1")
    await signed_checkout.saga.start(SagaOrder(n=2), saga_id="s2")
    async with PoolRun(lab.app) as pool:
        states = await _final(pool, signed_checkout, ["s1", "s2"])
    # then the start, each step's event (signed again once it carries the saga's fields)
    # and the compensations went through: one completed, one compensated,
    assert states == {"s1": "completed", "s2": "compensated"}
    applied, undone = await signed_checkout.service.counts()
    assert applied == {**{f"{s}|s1:{s}": 1 for s in STEPS},
                       "charge|s2:charge": 1, "reserve|s2:reserve": 1}
    assert undone == {"charge|s2:charge": 1, "reserve|s2:reserve": 1}
    # and no dead letter anywhere.
    for spec in lab.app.handlers.values():
        assert await aredis.xlen(spec.keys.dlq) == 0, spec.name


async def test_a_forged_event_naming_a_running_saga_is_dead_lettered_and_leaves_it_alone(
        lab: Lab, aredis: aioredis.Redis, signed_checkout: Checkout) -> None:
    release = asyncio.Event()

    async def hold(order: Any, ctx: Context) -> None:
        await release.wait()

    signed_checkout.fail["reserve"] = hold
    saga = signed_checkout.saga
    ship_stream = saga.keys.on(signed_checkout.streams["stock"])
    ship = next(s for s in lab.app.handlers.values() if s.stream == ship_stream)
    # Given a saga running, held at its second step,
    await saga.start(SagaOrder(n=1), saga_id="s1")
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: _state_is(signed_checkout, "s1", "running"), within=10,
                         what="the saga running")
        await pool.until(lambda: _applied(signed_checkout, "charge|s1:charge"), within=10,
                         what="its first step")
        # when someone writes an event for its last step, naming it, unsigned, and one
        # signed under another secret,
        for forger in (None, App("impostor", signing_keys={"k1": ELSEWHERE})):
            fields = encode({"n": 1}, headers={"saga": saga.name, "saga_id": "s1",
                                               "step": "ship"})
            if forger is not None:
                forger.integrity.seal(ship_stream, fields)
            await aredis.xadd(ship_stream, fields)  # type: ignore[arg-type]
        await pool.until(lambda: _count(aredis, ship.keys.dlq, 2), within=10,
                         what="the forged events dead-lettered")
        # the saga is still running, its last step never ran; released, it completes.
        assert await signed_checkout.states(["s1"]) == {"s1": "running"}
        applied, _ = await signed_checkout.service.counts()
        assert "ship|s1:ship" not in applied
        release.set()
        states = await _final(pool, signed_checkout, ["s1"])

    assert states == {"s1": "completed"}
    applied, undone = await signed_checkout.service.counts()
    assert applied["ship|s1:ship"] == 1 and undone == {}
    letters = await dead_letters(aredis, ship.keys)
    assert [f["dlq_error_type"] for _, f in letters] == ["SignatureError"] * 2


async def _state_is(world: Checkout, saga_id: str, state: str) -> bool:
    states: dict[str, str] = await world.states([saga_id])
    return states[saga_id] == state


async def _applied(world: Checkout, key: str) -> bool:
    applied, _ = await world.service.counts()
    return key in applied

