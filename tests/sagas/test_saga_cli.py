"""``seawall saga list|show|abort|retry|skip`` and the sagas of ``seawall status``, through
click's runner, against sagas that ran for real: the checkout saga in a pool in the test's
process, its state built by the saga scripts alone.

Every test builds the same world (its own saga names, removed afterwards):

===========  ===================================================================  ==========
saga id      what happened                                                         state
===========  ===================================================================  ==========
``done``     every step committed                                                  completed
``undone``   reserve aborted; charge undone                                        compensated
``stuck``    reserve aborted; undoing charge fails for good (until fixed)          failed
``half``     charge and reserve committed; ship asked to be retried in an hour     running
``waiting``  started while no pool ran: its first event is unread                  running
===========  ===================================================================  ==========

and a second saga type with a saga of its own called ``done``. The checkout saga has an
``on_outcome`` handler.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner, Result
from e2e.failure_helpers import Lab, PoolRun
from saga_helpers import Checkout, Order, checkout_saga, cleanup_saga

from queues import saga_store
from sagas import Saga, SagaOutcome
from workers.cli.saga import saga as saga_cli
from workers.cli.status import status as status_cli
from workers.context import Context
from workers.errors import Retry

pytestmark = pytest.mark.slow

IDS = {"done": 1, "undone": 2, "stuck": 3, "half": 4, "waiting": 5}


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 8}


@dataclass
class World:
    lab: Lab
    checkout: Checkout
    other: Saga
    redis_url: str
    bank_fixed: list[bool] = field(default_factory=lambda: [False])

    @property
    def name(self) -> str:
        return self.checkout.saga.name

    async def cli(self, *args: str) -> Result:
        """``seawall saga ARGS`` in a thread (its async commands run their own loop)."""
        return await asyncio.to_thread(CliRunner().invoke, saga_cli,
                                       [*args, "--redis-url", self.redis_url])

    async def state(self, saga_id: str) -> dict[str, str]:
        return await saga_store.ledger(self.lab.app.async_client, self.checkout.saga.keys,
                                       saga_id)

    async def settle(self, *, within: float = 20) -> None:
        """Run the pool until every saga but the running ones stands still."""
        async def quiet() -> bool:
            states = await self.checkout.states(list(IDS))
            half = await self.state("half")
            return (all(states[i] in saga_store.FINAL for i in ("done", "undone", "stuck"))
                    and half.get("step:reserve") == "committed")

        async with PoolRun(self.lab.app) as pool:
            await pool.until(quiet, within=within, interval=0.05, what="the sagas settled")


@pytest.fixture
async def world(lab: Lab, aredis: aioredis.Redis, redis_url: str) -> AsyncIterator[World]:
    checkout = checkout_saga(lab, aredis)
    other = Saga(lab.app, f"other{lab.uid}")

    @other.step(lab.stream("other"))
    async def only(order: Order, ctx: Context) -> None:
        return None

    @checkout.saga.on_outcome
    async def heard(outcome: SagaOutcome, ctx: Context) -> None:
        return None

    w = World(lab, checkout, other, redis_url)

    def reserve(order: Order, ctx: Context) -> None:
        if order.n in (IDS["undone"], IDS["stuck"]):
            raise ctx.saga.abort("card declined")

    def ship(order: Order, ctx: Context) -> None:
        if order.n == IDS["half"]:
            raise Retry("the courier answers in an hour", delay=3600)

    def undo_charge(order: Order, ctx: Context) -> None:
        if order.n == IDS["stuck"] and not w.bank_fixed[0]:
            raise ConnectionError("the bank is down")

    checkout.fail.update({"reserve": reserve, "ship": ship, "undo charge": undo_charge})
    try:
        for saga_id in ("done", "undone", "stuck", "half"):
            assert await checkout.saga.start(Order(n=IDS[saga_id]), saga_id=saga_id)
        assert await other.start(Order(n=0), saga_id="done")
        await w.settle()
        assert await checkout.saga.start(Order(n=IDS["waiting"]), saga_id="waiting")
        yield w
    finally:
        await cleanup_saga(aredis, checkout.saga)
        await cleanup_saga(aredis, other)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


# -- list -------------------------------------------------------------------------------------

async def test_list_shows_every_saga_stalest_first_with_cause_and_failed_step(
        world: World) -> None:
    rows = json.loads(ok(await world.cli("list", "--saga", world.name, "--json")).stdout)

    assert {r["saga_id"]: r["state"] for r in rows} == {
        "done": "completed", "undone": "compensated", "stuck": "failed", "half": "running",
        "waiting": "running"}
    since = [r["since_ms"] for r in rows]
    assert since == sorted(since)  # stalest first: longest in its state
    assert rows[-1]["saga_id"] == "waiting"  # the newest state of all
    by_id = {r["saga_id"]: r for r in rows}
    assert (by_id["stuck"]["cause"], by_id["stuck"]["failed_step"]) == (
        "compensation_failed", "charge")
    assert (by_id["undone"]["cause"], by_id["undone"]["failed_step"]) == ("aborted", "reserve")
    assert by_id["done"]["cause"] is None

    table = ok(await world.cli("list", "--saga", world.name)).stdout.splitlines()
    assert table[0].split() == ["SAGA", "ID", "STATE", "FOR", "CAUSE", "FAILED", "STEP"]
    [stuck] = [line.split() for line in table if " stuck " in line]
    assert stuck[:3] == [world.name, "stuck", "failed"]
    assert stuck[4:] == ["compensation_failed", "charge"]


async def test_list_filters_by_state_age_limit_and_saga_type(world: World) -> None:
    async def ids(*args: str) -> list[str]:
        result = ok(await world.cli("list", "--json", *args))
        return [r["saga_id"] for r in json.loads(result.stdout)
                if r["saga"] in (world.name, world.other.name)]

    assert await ids("--saga", world.name, "--state", "failed") == ["stuck"]
    assert await ids("--saga", world.name, "--state", "running") == ["half", "waiting"]
    assert sorted(await ids("--saga", world.name, "--state", "failed", "--state",
                            "compensated")) == ["stuck", "undone"]
    assert await ids("--saga", world.name, "--older-than", "1h") == []
    assert len(await ids("--saga", world.name, "--older-than", "0s")) == 5
    assert len(await ids("--saga", world.name, "--limit", "2")) == 2
    assert await ids("--saga", world.other.name) == ["done"]
    # Without --saga: every registered saga type.
    assert sorted(await ids("--limit", "100000")).count("done") == 2

    bad = await world.cli("list", "--older-than", "soon")
    assert bad.exit_code == 2
    assert "not a duration" in bad.stderr
    assert (await world.cli("list", "--state", "lost")).exit_code == 2


# -- show -------------------------------------------------------------------------------------

async def test_show_a_failed_saga_its_steps_timeline_and_the_compensation_to_run(
        world: World) -> None:
    data = json.loads(ok(await world.cli("show", "stuck", "--json")).stdout)

    assert (data["saga"], data["state"], data["cause"], data["failed_step"]) == (
        world.name, "failed", "compensation_failed", "charge")
    steps = {s["step"]: s for s in data["steps"]}
    assert steps["charge"]["status"] == "undo_failed"
    assert "the bank is down" in steps["charge"]["error"]
    assert steps["charge"]["memo"] == {"n": 3, "key": "stuck:charge"}
    assert steps["reserve"]["status"] == "failed"
    assert steps["reserve"]["error"] == "card declined"
    assert [(e["event"], e["step"]) for e in data["timeline"]] == [
        ("started", None), ("committed", "charge"), ("failed", "reserve"),
        ("stopped", "reserve"), ("compensating", "charge"),
        ("compensation failed", "charge"), ("failed", None)]
    assert data["to_compensate"] == ["charge"]

    text = ok(await world.cli("show", "stuck")).stdout
    assert "compensations still to run (next first): charge" in text
    assert "compensation failed" in text and "the bank is down" in text


async def test_show_a_running_saga_lists_what_would_be_compensated_last_first(
        world: World) -> None:
    data = json.loads(ok(await world.cli("show", "half", "--saga", world.name,
                                         "--json")).stdout)

    assert data["state"] == "running"
    assert [s["step"] for s in data["steps"]] == ["charge", "reserve"]
    assert data["to_compensate"] == ["reserve", "charge"]
    assert data["deadline_ms"] == 0
    text = ok(await world.cli("show", "half")).stdout
    assert "compensations that would run if it stopped now (next first): reserve, charge" in text


async def test_show_needs_the_saga_type_only_when_the_id_is_in_several(world: World) -> None:
    both = await world.cli("show", "done")
    assert both.exit_code == 2
    assert "several saga types" in both.stderr and "--saga" in both.stderr

    assert json.loads(ok(await world.cli("show", "done", "--saga", world.other.name,
                                         "--json")).stdout)["state"] == "completed"
    missing = await world.cli("show", "nobody")
    assert missing.exit_code == 1
    assert "no saga 'nobody'" in missing.stderr


# -- abort ------------------------------------------------------------------------------------

async def test_abort_turns_a_running_saga_back_and_refuses_a_finished_one(
        world: World) -> None:
    # Given "half" is running with charge and reserve committed, when an operator aborts it,
    result = ok(await world.cli("abort", "half"))
    # then it compensates, reserve first,
    assert "aborted; now compensating: undoing reserve" in result.stdout
    data = json.loads(ok(await world.cli("show", "half", "--json")).stdout)
    assert (data["state"], data["cause"]) == ("compensating", "aborted")
    assert data["to_compensate"] == ["reserve", "charge"]
    # and the workers finish it: both undone, last committed first.
    async with PoolRun(world.lab.app) as pool:
        await pool.until(lambda: _state_is(world, "half", "compensated"), within=20,
                         interval=0.05, what="half compensated")
    journal = [j for j in await world.checkout.service.journal() if " half:" in j]
    assert journal == ["do charge half:charge", "do reserve half:reserve",
                       "undo reserve half:reserve", "undo charge half:charge"]

    # A saga that is not running is left alone: exit 1, saying why.
    for saga_id, state in (("half", "compensated"), ("done", "completed")):
        refused = await world.cli("abort", saga_id, "--saga", world.name)
        assert refused.exit_code == 1
        assert f"is {state}, not running: nothing done" in refused.stderr
    assert (await world.state("done"))["state"] == "completed"


async def test_abort_of_a_saga_with_nothing_committed_compensates_at_once(
        world: World) -> None:
    result = ok(await world.cli("abort", "waiting"))
    assert "now compensated" in result.stdout
    assert (await world.state("waiting"))["cause"] == "aborted"
    # The saga's on_outcome handler hears of it, as if a worker had finished it.
    sent = await world.lab.app.async_client.xrange(world.checkout.saga.keys.outcome)
    heard = [json.loads(fields[b"payload"]) for _, fields in sent
             if fields[b"saga_id"] == b"waiting"]
    assert heard == [{"saga": world.name, "saga_id": "waiting", "state": "compensated",
                      "cause": "aborted", "failed_step": ""}]


async def _state_is(world: World, saga_id: str, state: str) -> bool:
    return (await world.state(saga_id)).get("state") == state


# -- retry and skip ---------------------------------------------------------------------------

async def test_retry_sends_the_failed_compensation_again(world: World) -> None:
    # Given "stuck" failed because undoing its charge failed for good, when the bank is
    # fixed and an operator retries,
    world.bank_fixed[0] = True
    result = ok(await world.cli("retry", "stuck", "--note", "bank is back"))
    assert "the compensation of charge sent again; now compensating: undoing charge" in (
        result.stdout)
    # then the workers undo the charge, and the saga ends compensated.
    async with PoolRun(world.lab.app) as pool:
        await pool.until(lambda: _state_is(world, "stuck", "compensated"), within=20,
                         interval=0.05, what="stuck compensated")
    _, undone = await world.checkout.service.counts()
    assert undone.get("charge|stuck:charge") == 1
    events = [e["event"] for e in json.loads(
        ok(await world.cli("show", "stuck", "--json")).stdout)["timeline"]]
    assert events[-3:] == ["retried by an operator", "compensated", "compensated"]

    # Only a failed saga can be retried: the script's reason, exit 1.
    again = await world.cli("retry", "stuck")
    assert again.exit_code == 1
    assert "saga stuck is compensated, not failed: nothing to retry" in again.stderr
    assert "script:" not in again.stderr


async def test_skip_needs_the_step_that_failed_and_then_goes_on(world: World) -> None:
    wrong = await world.cli("skip", "stuck", "--step", "reserve", "--note", "by hand")
    assert wrong.exit_code == 1
    assert "the compensation that failed is charge's, not reserve's" in wrong.stderr
    assert (await world.state("stuck"))["state"] == "failed"

    missing_note = await world.cli("skip", "stuck", "--step", "charge")
    assert missing_note.exit_code == 2

    result = ok(await world.cli("skip", "stuck", "--step", "charge", "--note",
                                "refunded by hand, ticket 42"))
    assert "charge marked undone by hand; now compensated" in result.stdout
    ledger = await world.state("stuck")
    assert (ledger["state"], ledger["step:charge"], ledger["note:charge"]) == (
        "compensated", "skipped", "refunded by hand, ticket 42")
    _, undone = await world.checkout.service.counts()
    assert "charge|stuck:charge" not in undone  # nobody ran the compensation


# -- status -----------------------------------------------------------------------------------

async def test_status_counts_each_saga_type_by_state(world: World) -> None:
    result = await asyncio.to_thread(CliRunner().invoke, status_cli,
                                     ["--json", "--redis-url", world.redis_url])
    ok(result)
    sagas = {s["name"]: s["counts"] for s in json.loads(result.stdout)["sagas"]}
    assert sagas[world.name] == {"running": 2, "completed": 1, "compensating": 0,
                                 "timed_out": 0, "compensated": 1, "failed": 1}
    assert sagas[world.other.name]["completed"] == 1

    table = ok(await asyncio.to_thread(CliRunner().invoke, status_cli,
                                       ["--redis-url", world.redis_url])).stdout
    lines = table.splitlines()
    assert "sagas:" in lines
    [row] = [line for line in lines[lines.index("sagas:"):] if line.startswith(world.name)]
    assert row.split() == [world.name, "running", "2", "completed", "1", "compensating", "0",
                           "timed_out", "0", "compensated", "1", "failed", "1"]

