"""A saga survives the SIGKILL of its pool process at each crash point, with real
``seawall run`` processes: the supervisor restarts the pool process under the same
consumer name, and the new process takes over what the dead one left pending.

Each crash point is one SIGKILL at reserve (a saga that completes) or at reserve's
compensation (a saga whose last step aborts, so reserve then charge are undone):

* in the handler, before its side effect (it sleeps; the test kills it);
* after the handler returned and before its commit (a middleware holds the outcome and
  sleeps; the test kills it);
* right after its commit: an observer, called once the commit is confirmed, SIGKILLs its
  own process. Commit and ack are one script, so this is also the moment between one
  step's (or compensation's) commit and the next event being handled.

Then the saga ends final, and the external service saw each call once, except the call
killed after its side effect and before its commit. That handler ran again and called the
service a second time under the same idempotency key (``ctx.saga.key``), so an idempotent
service applies it once. The saga's ledger records the step committed (or compensated)
once.

A handler that kills its process every time is a poison message: after
``max_deliveries`` it is dead-lettered, and its saga turns back (a step) or fails (a
compensation)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from e2e.failure_helpers import until
from e2e.support import E2E, Proc, alive, listed
from saga_app import CheckoutOrder, app_source, twin_in
from saga_checks import (
    compensated,
    completed,
    dead_letters,
    effects,
    leftovers,
    outcomes,
    settled,
    timeline_events,
    until_final,
)
from saga_helpers import STEPS, Service, cleanup_saga

from queues import saga_store
from sagas import Saga

pytestmark = pytest.mark.slow


@pytest.fixture
async def saga(e2e: E2E, aredis: aioredis.Redis) -> AsyncIterator[Saga]:
    declared = twin_in(e2e)
    yield declared
    e2e.kill_all()  # first: a live pool process would make its streams again
    await cleanup_saga(aredis, declared)


@pytest.mark.parametrize("target", ["reserve", "undo reserve"])
@pytest.mark.parametrize("crash", ["in the handler", "before the commit", "after the commit"])
async def test_a_saga_ends_final_and_consistent_after_a_sigkill(
        e2e: E2E, aredis: aioredis.Redis, saga: Saga, crash: str, target: str) -> None:
    undoing = target.startswith("undo ")
    call = target if undoing else f"do {target}"
    app_path = e2e.write_app(app_source(saga.name, [s.stream for s in saga.steps],
                                        crash=crash, target=target))
    run = e2e.run(app_path)
    [first_pid] = run.wait_children(1)

    # Given a saga whose pool process reaches the crash point,
    order = CheckoutOrder(n=1, abort_at="ship" if undoing else "")
    assert await saga.start(order, saga_id="s1")
    doomed = await until(lambda: listed(e2e.client, e2e.key("doomed")), within=20,
                         what=f"the pool process at the crash point: {crash} of {target}")
    assert doomed == [f"{target}|{first_pid}"]
    # when it is SIGKILLed there (right after the commit, it kills itself),
    if crash != "after the commit":
        os.kill(first_pid, signal.SIGKILL)
    await until(lambda: not alive(first_pid), within=10, what="the pool process dead")

    # then the supervisor starts another, and the saga ends final, nothing left behind;
    final = await until_final(aredis, saga, ["s1"], within=30, alive=_running(run))
    [second_pid] = run.wait_children(1)
    assert second_pid != first_pid
    assert final == {"s1": "compensated" if undoing else "completed"}
    await until(lambda: settled(aredis, saga), within=10,
                what="nothing left in the saga's streams")

    # the service saw every call once, in order, but the one killed between its side
    # effect and its commit: that one twice in a row, under the same idempotency key;
    seen = (await effects(Service(aredis, e2e.key("svc:"))))["s1"]
    applied = ["charge", "reserve"] if undoing else list(STEPS)
    calls = compensated(applied) if undoing else completed(applied)
    twice = call if crash == "before the commit" else None
    assert seen.calls == calls
    assert seen.journal == [made for c in calls for made in [c] * (2 if c == twice else 1)]
    assert seen.applied == {s: 1 + (f"do {s}" == twice) for s in applied}
    assert seen.undone == ({s: 1 + (f"undo {s}" == twice) for s in applied}
                           if undoing else {})
    # made by the process that died only if it died after the call,
    assert seen.pids[call] == {"in the handler": [second_pid],
                               "before the commit": [first_pid, second_pid],
                               "after the commit": [first_pid]}[crash]
    # and the saga's ledger records each step committed once, compensated once (or not).
    events = await timeline_events(aredis, saga, "s1")
    assert [events[("committed", s)] for s in applied] == [1] * len(applied)
    assert [events[("compensated", s)] for s in applied] == [int(undoing)] * len(applied)
    assert events[(final["s1"], "")] == 1
    assert (await outcomes(aredis, saga))["s1"] == 1
    assert listed(e2e.client, e2e.key("outcomes")) == [f"s1 {final['s1']}"]
    assert await dead_letters(aredis, saga) == {}
    assert await leftovers(aredis, saga) == {}


@pytest.mark.parametrize("target", ["reserve", "undo reserve"])
async def test_a_handler_killing_its_process_every_time_is_dead_lettered_and_its_saga_ends(
        e2e: E2E, aredis: aioredis.Redis, saga: Saga, target: str) -> None:
    undoing = target.startswith("undo ")
    handler = f"{saga.name}.reserve" + (".undo" if undoing else "")
    app_path = e2e.write_app(app_source(saga.name, [s.stream for s in saga.steps],
                                        crash="every time", target=target,
                                        max_deliveries=2))
    run = e2e.run(app_path)
    run.wait_children(1)

    # Given a step (or a compensation) whose handler kills its pool process every time,
    assert await saga.start(CheckoutOrder(n=1, abort_at="ship" if undoing else ""),
                            saga_id="s1")
    # when its message has been delivered max_deliveries (2) times,
    final = await until_final(aredis, saga, ["s1"], within=30, alive=_running(run))
    await until(lambda: settled(aredis, saga), within=10,
                what="nothing left in the saga's streams")
    # then it is dead-lettered, after two deaths,
    assert len(listed(e2e.client, e2e.key("doomed"))) == 2
    assert await dead_letters(aredis, saga) == {handler: 1}
    seen = (await effects(Service(aredis, e2e.key("svc:"))))["s1"]
    ledger = await saga_store.ledger(aredis, saga.keys, "s1")
    if undoing:
        # a compensation's saga is failed, its chain stopped there, for an operator;
        assert final == {"s1": "failed"}
        assert (ledger["cause"], ledger["failed_step"]) == ("compensation_failed",
                                                            "reserve")
        assert seen.journal == ["do charge", "do reserve"]
    else:
        # a step's saga compensates the step that committed before it.
        assert final == {"s1": "compensated"}
        assert (ledger["cause"], ledger["failed_step"]) == ("step_failed", "reserve")
        assert seen.journal == compensated(["charge"])
    assert listed(e2e.client, e2e.key("outcomes")) == [f"s1 {final['s1']}"]
    assert await leftovers(aredis, saga) == {}


def _running(run: Proc) -> Callable[[], None]:
    def check() -> None:
        assert run.popen.poll() is None, f"seawall run exited\n{run.logs()}"
    return check
