"""Sagas end to end in a pool in the test's process, against the real Redis: every saga
ends in a final state whose net effect on the external service is consistent (completed:
every step applied once; compensated: every applied step undone once, last first)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from e2e.failure_helpers import Lab, PoolRun
from saga_helpers import STEPS, Checkout, Order, checkout_saga, cleanup_saga

from queues import saga_store
from queues.commit import slot_of
from sagas import SagaOutcome
from workers.context import Context
from workers.middleware import Call
from workers.outcome import Kind, Outcome

pytestmark = pytest.mark.slow


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 16}


@pytest.fixture
async def checkout(lab: Lab, aredis: aioredis.Redis) -> AsyncIterator[Checkout]:
    world = checkout_saga(lab, aredis)
    yield world
    await cleanup_saga(aredis, world.saga)


async def _until_final(pool: PoolRun, world: Checkout, ids: list[str]) -> dict[str, str]:
    async def final() -> dict[str, str] | None:
        states = await world.states(ids)
        return states if all(s in saga_store.FINAL for s in states.values()) else None

    return await pool.until(final, within=20, interval=0.05, what="every saga final")


async def test_a_saga_whose_steps_all_commit_completes_each_applied_once(
        lab: Lab, checkout: Checkout) -> None:
    # Given the checkout saga, when one saga runs with nothing failing,
    assert await checkout.saga.start(Order(n=1), saga_id="s1")
    assert not await checkout.saga.start(Order(n=1), saga_id="s1")  # idempotent on its id
    async with PoolRun(lab.app) as pool:
        states = await _until_final(pool, checkout, ["s1"])
    # then it completed, each step applied once, nothing undone,
    assert states == {"s1": "completed"}
    applied, undone = await checkout.service.counts()
    assert applied == {f"{step}|s1:{step}": 1 for step in STEPS}
    assert undone == {}
    # and its ledger says so, step by step.
    ledger = await saga_store.ledger(lab.app.async_client, checkout.saga.keys, "s1")
    assert {ledger[f"step:{s}"] for s in STEPS} == {"committed"}


@pytest.mark.parametrize("failing", STEPS)
@pytest.mark.parametrize("how", ["abort", "retries exhausted"])
async def test_a_step_failing_for_good_compensates_the_committed_ones_last_first(
        lab: Lab, checkout: Checkout, failing: str, how: str) -> None:
    # Given step k fails for good (it aborts, or raises on every attempt),
    def fail(order: Order, ctx: Context) -> None:
        if how == "abort":
            raise ctx.saga.abort("card declined")
        raise ConnectionError("the warehouse is down")

    checkout.fail[failing] = fail
    settled: list[str] = []
    step = f"{checkout.saga.name}.{failing}"

    @lab.app.observe
    def record(call: Call, outcome: Outcome) -> None:
        if call.handler == step and outcome.kind is not Kind.RETRY:
            settled.append(outcome.kind.value)

    # when a saga runs,
    await checkout.saga.start(Order(n=1), saga_id="s1")
    async with PoolRun(lab.app) as pool:
        states = await _until_final(pool, checkout, ["s1"])
        await pool.until(lambda: bool(settled), within=5, what="step k's outcome heard")
    # then step k's outcome is counted as what it was: an abort, or a dead letter,
    assert settled == ["aborted" if how == "abort" else "dead_letter"]
    # and the saga ends compensated: the steps before k were applied once and undone once, in
    # the reverse order; step k and the ones after it never applied.
    assert states == {"s1": "compensated"}
    before = list(STEPS[:STEPS.index(failing)])
    applied, undone = await checkout.service.counts()
    assert applied == {f"{s}|s1:{s}": 1 for s in before}
    assert undone == {f"{s}|s1:{s}": 1 for s in before}
    assert await checkout.service.journal() == (
        [f"do {s} s1:{s}" for s in before] + [f"undo {s} s1:{s}" for s in reversed(before)])
    ledger = await saga_store.ledger(lab.app.async_client, checkout.saga.keys, "s1")
    assert ledger["cause"] == ("aborted" if how == "abort" else "step_failed")
    assert ledger["failed_step"] == failing
    # A failure is dead-lettered; an abort is a decision, not a dead letter.
    keys = lab.app.handlers[f"{checkout.saga.name}.{failing}"].keys
    assert await lab.app.async_client.xlen(keys.dlq) == (0 if how == "abort" else 1)
    # saga_fail.lua keeps the counts by error type with the dead letter it adds.
    counts = await lab.app.async_client.hgetall(keys.dlq_counts)
    assert counts == ({} if how == "abort" else {b"ConnectionError": b"1"})


async def test_on_outcome_hears_each_finished_saga_once(lab: Lab, checkout: Checkout) -> None:
    heard: list[tuple[str, str, str]] = []

    # Given an outcome handler, and one saga that completes and one whose step 2 aborts,
    @checkout.saga.on_outcome
    async def notify(outcome: SagaOutcome) -> None:
        heard.append((outcome.saga_id, outcome.state, outcome.failed_step))

    def abort_the_second(order: Order, ctx: Context) -> None:
        if order.n == 2:
            raise ctx.saga.abort("out of stock")

    checkout.fail["reserve"] = abort_the_second
    for n in (1, 2):
        await checkout.saga.start(Order(n=n), saga_id=f"s{n}")
    # when both run,
    async with PoolRun(lab.app) as pool:
        await _until_final(pool, checkout, ["s1", "s2"])
        await pool.until(lambda: len(heard) == 2, within=10, what="both outcomes")
    # then it heard each once, with its final state.
    assert sorted(heard) == [("s1", "completed", ""), ("s2", "compensated", "reserve")]


async def test_a_last_step_publishing_outside_the_saga_in_its_slot_still_completes_it(
        lab: Lab, aredis: aioredis.Redis, checkout: Checkout) -> None:
    # Given a stream outside the saga that happens to share the saga's hash slot,
    saga_slot = slot_of(checkout.saga.keys.on("x"))
    outside = next(name for i in range(200_000)
                   if slot_of(name := f"notices-{lab.uid}-{i}") == saga_slot)
    lab.streams.append(outside)

    # and a last step that publishes only there,
    async def notify(order: Order, ctx: Context) -> None:
        await ctx.publish(outside, order)

    checkout.fail["ship"] = notify
    await checkout.saga.start(Order(n=1), saga_id="s1")
    async with PoolRun(lab.app) as pool:
        states = await _until_final(pool, checkout, ["s1"])
    # then the saga completed, and the notice is on its stream.
    assert states == {"s1": "completed"}
    assert await aredis.xlen(outside) == 1


async def test_a_step_sending_events_to_two_steps_fails_and_its_saga_compensates(
        lab: Lab, checkout: Checkout) -> None:
    # Given a first step that sends an event to the second step and one to the third
    # (two branches: a saga is a chain),
    async def fan_out(order: Order, ctx: Context) -> None:
        await ctx.publish(checkout.streams["stock"], order)

    checkout.fail["charge"] = fan_out
    await checkout.saga.start(Order(n=1), saga_id="s1")
    async with PoolRun(lab.app) as pool:
        states = await _until_final(pool, checkout, ["s1"])
    # then that step failed, nothing went on, and the saga ended compensated.
    assert states == {"s1": "compensated"}
    ledger = await saga_store.ledger(lab.app.async_client, checkout.saga.keys, "s1")
    assert (ledger["step:charge"], ledger["failed_step"]) == ("failed", "charge")
    assert "a saga is a chain" in ledger["error:charge"]
    applied, _ = await checkout.service.counts()
    assert set(applied) == {"charge|s1:charge"}


async def test_after_a_retried_compensation_the_saga_keeps_why_it_stopped(
        lab: Lab, checkout: Checkout) -> None:
    # Given a saga aborted at reserve whose charge compensation fails for good,
    def abort(order: Order, ctx: Context) -> None:
        raise ctx.saga.abort("card declined")

    def bank_down(order: Order, ctx: Context) -> None:
        raise ConnectionError("the bank is down")

    checkout.fail["reserve"] = abort
    checkout.fail["undo charge"] = bank_down
    await checkout.saga.start(Order(n=1), saga_id="s1")
    async with PoolRun(lab.app) as pool:
        assert await _until_final(pool, checkout, ["s1"]) == {"s1": "failed"}
        ledger = await saga_store.ledger(lab.app.async_client, checkout.saga.keys, "s1")
        assert (ledger["cause"], ledger["failed_step"]) == ("compensation_failed", "charge")
        # when the bank is back and an operator retries,
        del checkout.fail["undo charge"]
        await saga_store.resume(lab.app.async_client, checkout.saga.runtime.layout, "s1",
                                action="retry", now_ms=int(time.time() * 1000))
        states = await _until_final(pool, checkout, ["s1"])
    # then it ends compensated, still saying it stopped because reserve aborted.
    assert states == {"s1": "compensated"}
    ledger = await saga_store.ledger(lab.app.async_client, checkout.saga.keys, "s1")
    assert (ledger["cause"], ledger["failed_step"]) == ("aborted", "reserve")
