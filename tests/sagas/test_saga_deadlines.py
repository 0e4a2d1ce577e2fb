"""Saga deadlines, in a pool in the test's process against the real Redis: a deadline that
passes while a step runs turns the saga back, and the step, when it returns, is
compensated too (late) and goes no further; of two sweepers on one due saga exactly one
turns it back; a deadline that passes after the saga completed changes nothing."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from e2e.failure_helpers import Lab, PoolRun
from saga_checks import (
    compensated,
    completed,
    dead_letters,
    effects,
    hear_outcomes,
    leftovers,
    outcomes,
    settled,
    states,
    timeline_events,
    until_final,
)
from saga_helpers import STEPS, Checkout, Order, checkout_saga, cleanup_saga

from queues import saga_store
from workers.context import Context

pytestmark = pytest.mark.slow


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 16}


async def _timeline(aredis: aioredis.Redis, world: Checkout, saga_id: str
                    ) -> list[tuple[str, str]]:
    """(event, step) in order; for "stopped", (event, cause)."""
    return [(e["event"], e["detail"] if e["event"] == "stopped" else e["step"])
            for e in await saga_store.timeline(aredis, world.saga.keys, saga_id)]


async def test_a_deadline_passing_while_a_step_runs_turns_the_saga_back_and_the_step_late(
        lab: Lab, aredis: aioredis.Redis) -> None:
    world = checkout_saga(lab, aredis, deadline=1.5)
    heard = hear_outcomes(world.saga)
    # Given a saga with a 1.5 s deadline whose second step, reserve, is still running when
    # the deadline passes (it returns only once the test lets it: no race with the clock),
    release = asyncio.Event()
    reserve_started = asyncio.Event()

    async def slow(order: Order, ctx: Context) -> None:
        reserve_started.set()
        await release.wait()

    world.fail["reserve"] = slow
    try:
        assert await world.saga.start(Order(n=1), saga_id="s1")
        async with PoolRun(lab.app) as pool:
            await pool.until(reserve_started.is_set, within=10, what="reserve running")
            # when the pool's deadline sweeper finds it due,
            final = await until_final(aredis, world.saga, ["s1"], within=10,
                                      alive=pool.check)
            # then it timed out and compensated what committed (charge), while reserve
            # still runs;
            assert final == {"s1": "compensated"}
            ledger = await saga_store.ledger(aredis, world.saga.keys, "s1")
            assert ledger["cause"] == "timed_out"
            seen = await effects(world.service)
            assert seen["s1"].journal == ["do charge", "undo charge"]

            # and when reserve returns, its commit finds the saga stopped: it is
            # compensated too, and ship never runs.
            release.set()
            await pool.until(lambda: settled(aredis, world.saga), within=10,
                             what="reserve's late compensation")

        seen = await effects(world.service)
        assert seen["s1"].journal == ["do charge", "undo charge", "do reserve", "undo reserve"]
        assert seen["s1"].applied == {"charge": 1, "reserve": 1}
        assert seen["s1"].undone == {"charge": 1, "reserve": 1}
        assert await states(aredis, world.saga, ["s1"]) == {"s1": "compensated"}
        assert await _timeline(aredis, world, "s1") == [
            ("started", ""), ("committed", "charge"), ("stopped", "timed_out"),
            ("compensating", "charge"), ("compensated", "charge"), ("compensated", ""),
            ("late", "reserve"), ("compensated", "reserve")]
        ledger = await saga_store.ledger(aredis, world.saga.keys, "s1")
        assert "step:ship" not in ledger
        assert [(o.state, o.cause) for o in heard] == [("compensated", "timed_out")]
        assert (await outcomes(aredis, world.saga))["s1"] == 1
        assert await dead_letters(aredis, world.saga) == {}
        assert await leftovers(aredis, world.saga) == {}
    finally:
        release.set()
        await cleanup_saga(aredis, world.saga)


async def test_of_two_sweepers_on_one_due_saga_exactly_one_turns_it_back(
        lab: Lab, aredis: aioredis.Redis, redis_url: str) -> None:
    # Given a saga whose deadline is a minute away (the pool's own sweeper, on the real
    # clock, leaves it alone), with charge and reserve committed and ship still running,
    world = checkout_saga(lab, aredis, deadline=60)
    heard = hear_outcomes(world.saga)
    release = asyncio.Event()
    ship_started = asyncio.Event()

    async def hold(order: Order, ctx: Context) -> None:
        ship_started.set()
        await release.wait()

    world.fail["ship"] = hold
    layout = world.saga.runtime.layout
    sweepers = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        assert await world.saga.start(Order(n=1), saga_id="s1")
        async with PoolRun(lab.app) as pool:
            await pool.until(ship_started.is_set, within=10, what="ship running")
            ledger = await saga_store.ledger(aredis, world.saga.keys, "s1")
            deadline_ms = int(ledger["deadline_ms"])
            # a sweeper whose clock is before the deadline does nothing,
            assert not await saga_store.abort(aredis, layout, "s1", cause="timed_out",
                                              only_if_due=True, now_ms=deadline_ms - 1)
            assert await states(aredis, world.saga, ["s1"]) == {"s1": "running"}

            # when two sweepers past the deadline both try to turn it back at once,
            won = await asyncio.gather(*(
                saga_store.abort(client, layout, "s1", cause="timed_out", only_if_due=True,
                                 now_ms=deadline_ms + 1)
                for client in sweepers))
            # then exactly one did,
            assert sorted(won) == [False, True]
            await until_final(aredis, world.saga, ["s1"], within=10, alive=pool.check)
            # and the chain ran once: reserve then charge, each undone once;
            seen = await effects(world.service)
            assert seen["s1"].journal == compensated(["charge", "reserve"])
            events = await timeline_events(aredis, world.saga, "s1")
            assert events[("stopped", "")] == 1
            assert events[("compensating", "reserve")] == events[("compensating", "charge")] == 1
            assert events[("compensated", "")] == 1

            # ship, returning after that, is compensated late, outside the chain.
            release.set()
            await pool.until(lambda: settled(aredis, world.saga), within=10,
                             what="ship's late compensation")
        seen = await effects(world.service)
        assert seen["s1"].journal == [*compensated(["charge", "reserve"]), "do ship",
                                      "undo ship"]
        assert seen["s1"].applied == seen["s1"].undone == {s: 1 for s in STEPS}
        assert await states(aredis, world.saga, ["s1"]) == {"s1": "compensated"}
        assert [(o.state, o.cause) for o in heard] == [("compensated", "timed_out")]
        assert (await outcomes(aredis, world.saga))["s1"] == 1
        assert await dead_letters(aredis, world.saga) == {}
        assert await leftovers(aredis, world.saga) == {}
    finally:
        release.set()
        for client in sweepers:
            await client.aclose()
        await cleanup_saga(aredis, world.saga)


async def test_a_deadline_passing_after_the_saga_completed_changes_nothing(
        lab: Lab, aredis: aioredis.Redis) -> None:
    # Given a saga with a half-second deadline that completes well before it,
    world = checkout_saga(lab, aredis, deadline=0.5)
    heard = hear_outcomes(world.saga)
    try:
        assert await world.saga.start(Order(n=1), saga_id="s1")
        async with PoolRun(lab.app) as pool:
            assert await until_final(aredis, world.saga, ["s1"], within=10,
                                     alive=pool.check) == {"s1": "completed"}
            ledger = await saga_store.ledger(aredis, world.saga.keys, "s1")
            # when its deadline passes, and the pool's sweeper (every second) runs after it,
            past = int(ledger["deadline_ms"]) + 1200
            while time.time() * 1000 < past:
                assert await states(aredis, world.saga, ["s1"]) == {"s1": "completed"}
                await asyncio.sleep(0.1)
            await pool.until(lambda: heard, within=10, what="the outcome heard")
        # then it is not due, no sweeper can turn it back,
        assert await saga_store.due(aredis, world.saga.keys, now_ms=past * 2) == []
        assert not await saga_store.abort(aredis, world.saga.runtime.layout, "s1",
                                          cause="timed_out", only_if_due=True,
                                          now_ms=past * 2)
        # and it stays completed, each step applied once, nothing undone.
        assert await states(aredis, world.saga, ["s1"]) == {"s1": "completed"}
        seen = await effects(world.service)
        assert seen["s1"].journal == completed()
        assert seen["s1"].undone == {}
        events = await timeline_events(aredis, world.saga, "s1")
        assert not any(event in ("stopped", "compensating") for event, _ in events)
        assert [o.state for o in heard] == ["completed"]
        assert (await outcomes(aredis, world.saga))["s1"] == 1
        assert await leftovers(aredis, world.saga) == {}
    finally:
        await cleanup_saga(aredis, world.saga)
