"""Saga deadlines, in a pool in the test's process against the real Redis: a deadline that
passes while a step runs turns the saga back, and the step, when it returns, is
compensated too (late) and goes no further; of two sweepers on one due saga exactly one
turns it back; a deadline that passes after the saga completed changes nothing."""

from __future__ import annotations

import asyncio
import logging
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


async def test_a_late_steps_compensation_failing_for_good_leaves_its_saga_to_an_operator(
        lab: Lab, aredis: aioredis.Redis) -> None:
    world = checkout_saga(lab, aredis, deadline=1.0, attempts=2)
    heard = hear_outcomes(world.saga)
    # Given a saga whose deadline passes while reserve runs, and whose compensation of
    # reserve fails every time,
    release = asyncio.Event()
    reserve_started = asyncio.Event()

    async def slow(order: Order, ctx: Context) -> None:
        reserve_started.set()
        await release.wait()

    def warehouse_down(order: Order, ctx: Context) -> None:
        raise ConnectionError("the warehouse is down")

    world.fail["reserve"] = slow
    world.fail["undo reserve"] = warehouse_down
    undo_reserve = f"{world.saga.name}.reserve.undo"
    try:
        assert await world.saga.start(Order(n=1), saga_id="s1")
        async with PoolRun(lab.app) as pool:
            await pool.until(reserve_started.is_set, within=10, what="reserve running")
            assert await until_final(aredis, world.saga, ["s1"], within=10,
                                     alive=pool.check) == {"s1": "compensated"}
            # when reserve returns late and its compensation fails for good,
            release.set()
            await pool.until(lambda: _dead_letters_of(aredis, world, undo_reserve),
                             within=10, what="reserve's compensation dead-lettered")
            await pool.until(lambda: settled(aredis, world.saga), within=10,
                             what="nothing left in the saga's streams")
            # then the saga does not say compensated while reserve stays applied: like
            # any compensation failing for good, it leaves the saga failed, for a person,
            seen = await effects(world.service)
            assert seen["s1"].journal == ["do charge", "undo charge", "do reserve"]
            assert await states(aredis, world.saga, ["s1"]) == {"s1": "failed"}
            ledger = await saga_store.ledger(aredis, world.saga.keys, "s1")
            assert ledger["failed_step"] == "reserve"
            assert ledger["step:reserve"] == "undo_failed"
            # and once the warehouse is back, an operator's retry undoes reserve.
            del world.fail["undo reserve"]
            assert await saga_store.resume(aredis, world.saga.runtime.layout, "s1",
                                           action="retry",
                                           now_ms=int(time.time() * 1000)) == "reserve"
            assert await until_final(aredis, world.saga, ["s1"], within=10,
                                     alive=pool.check) == {"s1": "compensated"}
            await pool.until(lambda: settled(aredis, world.saga), within=10,
                             what="nothing left in the saga's streams")
        seen = await effects(world.service)
        assert seen["s1"].journal == ["do charge", "undo charge", "do reserve", "undo reserve"]
        assert seen["s1"].undone == {"charge": 1, "reserve": 1}
        assert heard[-1].state == "compensated"
        assert await dead_letters(aredis, world.saga) == {undo_reserve: 1}
    finally:
        release.set()
        await cleanup_saga(aredis, world.saga)


async def _dead_letters_of(client: aioredis.Redis, world: Checkout, handler: str) -> int:
    return (await dead_letters(client, world.saga)).get(handler, 0)


SWEEP_SECONDS = 1.0
"""How often a pool sweeps its sagas' deadlines (``sagas.settlement``)."""


async def test_many_sagas_due_at_once_are_all_turned_back_by_the_next_sweeps(
        lab: Lab, aredis: aioredis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="seawall.saga")  # not a warning per saga
    world = checkout_saga(lab, aredis, deadline=1.0)
    # Given 400 sagas with a one-second deadline, all stuck in their first step (which
    # gives up once the test lets it),
    release = asyncio.Event()

    async def stuck(order: Order, ctx: Context) -> None:
        await release.wait()
        raise ctx.saga.abort("gave up")

    world.fail["charge"] = stuck
    ids = [f"s{n}" for n in range(400)]
    try:
        for chunk in range(0, len(ids), 100):
            assert all(await asyncio.gather(*(world.saga.start(Order(n=1), saga_id=i)
                                              for i in ids[chunk:chunk + 100])))
        async with PoolRun(lab.app) as pool:
            # when their deadline passes,
            await until_final(aredis, world.saga, ids, within=30, alive=pool.check)
            release.set()
            await pool.until(lambda: settled(aredis, world.saga), within=30,
                             what="nothing left in the saga's streams")
        # then every one was turned back within two sweeps of its deadline (when Redis
        # says it entered its final state), not a hundred per sweep;
        deadlines = {i: int((await saga_store.ledger(aredis, world.saga.keys, i))
                            ["deadline_ms"]) for i in ids}
        stopped = dict(await aredis.zrange(world.saga.keys.by_state("compensated"), 0, -1,
                                           withscores=True))
        late_ms = {i: int(stopped[i.encode()]) - deadlines[i] for i in ids}
        worst = max(late_ms, key=late_ms.__getitem__)
        assert late_ms[worst] <= 2 * SWEEP_SECONDS * 1000, (
            f"{worst} was turned back {late_ms[worst]} ms after its deadline; "
            f"{sum(ms > 2000 for ms in late_ms.values())} of {len(ids)} over 2000 ms")
        # and nothing ran: no step applied, nothing undone.
        assert await effects(world.service) == {}
        assert await dead_letters(aredis, world.saga) == {}
    finally:
        release.set()
        await cleanup_saga(aredis, world.saga)
