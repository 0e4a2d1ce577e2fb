"""The pool's workers: fetched messages start in fetch order, at most ``concurrency`` at a
time; unstarted ones are dropped at shutdown; the watchdog cancels a message that overran
its timeout (marking its call timed out) and the worker carries on; a run that raises
does not kill its worker.

The runnables here are small fakes of a handler's runner that record what happened and
wait on events the test sets; a test waits for what it expects with a bound, never for a
fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

from queues.envelope import Envelope
from queues.keys import HandlerKeys
from workers.handler import build_spec
from workers.middleware import Call
from workers.runtime.acker import AckBatcher
from workers.runtime.dispatch import Dispatcher, WorkerSlot
from workers.runtime.inflight import InFlight
from workers.runtime.limiter import CapacityLimiter
from workers.runtime.runner import Runner
from workers.runtime.settle import Settler
from workers.runtime.stack import build_stack

WITHIN = 1.0
"""Longest wait for something expected: a bound, never a pause."""
WATCH_EVERY = 0.01


class Progress:
    """Set whenever a fake runner does something; tests wait for a condition on it."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def until(self, condition: Callable[[], bool], within: float = WITHIN) -> None:
        deadline = time.monotonic() + within
        while not condition():
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the condition did not come true within {within} s")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass


class FakeRunner:
    """A handler's runner: each message runs until the test releases it (or, if named in
    ``fail``, raises at once). It puts a call on its worker, as the real one does."""

    def __init__(self, progress: Progress, *, name: str = "fake", timeout: float | None = None,
                 hold: bool = True, fail: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.timeout = timeout
        self.progress = progress
        self._hold = hold
        self._fail = fail
        self.started: list[str] = []
        self.finished: list[str] = []
        self.dropped: list[str] = []
        self.cancelled: list[tuple[str, bool]] = []
        """(entry id, whether its call was marked timed out) of each cancelled run."""
        self.running = 0
        self.most_running = 0
        self._release: dict[str, asyncio.Event] = {}

    def release(self, entry_id: str) -> None:
        self._release.setdefault(entry_id, asyncio.Event()).set()

    async def run(self, envelope: Envelope, worker: WorkerSlot) -> None:
        entry_id = envelope.entry_id
        call = Call(self.name, "default", "orders", envelope, time.monotonic())
        worker.call = call
        self.started.append(entry_id)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.progress.changed()
        try:
            if entry_id in self._fail:
                raise RuntimeError(f"bookkeeping bug on {entry_id}")
            if self._hold:
                await self._release.setdefault(entry_id, asyncio.Event()).wait()
            self.finished.append(entry_id)
        except asyncio.CancelledError:
            self.cancelled.append((entry_id, call.timed_out))
            if not call.timed_out:
                raise
            # As the real stack does: the timeout becomes the message's failure.
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
        finally:
            self.running -= 1
            self.progress.changed()

    def drop(self, envelope: Envelope) -> None:
        self.dropped.append(envelope.entry_id)
        self.progress.changed()


def envelopes(*entry_ids: str) -> list[Envelope]:
    return [Envelope("orders", e, {b"payload": b"{}"}) for e in entry_ids]


@pytest.fixture
def progress() -> Progress:
    return Progress()


@pytest.fixture
async def dispatcher() -> AsyncIterator[Callable[..., Dispatcher]]:
    made: list[Dispatcher] = []

    def make(concurrency: int, watchdog: float | None = None) -> Dispatcher:
        d = Dispatcher(concurrency)
        d.start(watchdog)
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


async def test_messages_start_in_fetch_order_on_at_most_concurrency_workers(
        dispatcher: Callable[..., Dispatcher], progress: Progress) -> None:
    runner = FakeRunner(progress)
    pool = dispatcher(2)

    # When five messages are queued on two workers,
    pool.submit(runner, envelopes("1-0", "2-0", "3-0", "4-0", "5-0"))
    await progress.until(lambda: runner.started == ["1-0", "2-0"])
    assert pool.queued == 3
    # and they finish one by one, the second first,
    for entry_id in ("2-0", "1-0", "3-0", "4-0", "5-0"):
        runner.release(entry_id)
    await progress.until(lambda: len(runner.finished) == 5)

    # then each started in the order it was fetched, never more than two at once.
    assert runner.started == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    assert runner.most_running == 2
    assert pool.queued == 0


async def test_messages_submitted_later_wake_idle_workers(
        dispatcher: Callable[..., Dispatcher], progress: Progress) -> None:
    runner = FakeRunner(progress, hold=False)
    pool = dispatcher(3)

    for batch, total in ((["1-0"], 1), (["2-0", "3-0"], 3), (["4-0"], 4)):
        pool.submit(runner, envelopes(*batch))
        await progress.until(lambda: len(runner.finished) == total)  # noqa: B023

    assert runner.finished == ["1-0", "2-0", "3-0", "4-0"]


async def test_drop_queued_drops_the_unstarted_ones_and_leaves_the_running_one(
        dispatcher: Callable[..., Dispatcher], progress: Progress) -> None:
    runner = FakeRunner(progress)
    pool = dispatcher(1)
    pool.submit(runner, envelopes("1-0", "2-0", "3-0"))
    await progress.until(lambda: runner.started == ["1-0"])

    # When the pool stops taking messages,
    dropped = pool.drop_queued()

    # then the two unstarted ones are handed back to their runner (their slots freed; they
    # stay pending in Redis), the running one finishes, and nothing more starts.
    assert dropped == 2 and runner.dropped == ["2-0", "3-0"] and pool.queued == 0
    runner.release("1-0")
    await progress.until(lambda: runner.finished == ["1-0"])
    pool.submit(runner, envelopes("4-0"))  # a worker is still there for new work
    runner.release("4-0")
    await progress.until(lambda: runner.finished == ["1-0", "4-0"])
    assert runner.started == ["1-0", "4-0"]


async def test_the_watchdog_cancels_an_overrunning_message_and_its_worker_carries_on(
        dispatcher: Callable[..., Dispatcher], progress: Progress) -> None:
    slow = FakeRunner(progress, name="slow", timeout=0.05)
    pool = dispatcher(1, WATCH_EVERY)

    # Given a message that never finishes by itself, and one queued behind it,
    pool.submit(slow, envelopes("1-0", "2-0"))

    # when it overruns its 0.05 s timeout,
    await progress.until(lambda: slow.cancelled != [])

    # then the watchdog cancelled it with its call marked timed out, and the same worker
    # went on to the next message.
    assert slow.cancelled == [("1-0", True)]
    await progress.until(lambda: slow.started == ["1-0", "2-0"])
    slow.release("2-0")  # (may already have timed out too: it is the same kind of message)
    await progress.until(lambda: slow.running == 0)
    assert ("1-0", False) not in slow.cancelled


async def test_the_watchdog_leaves_messages_without_a_timeout_alone(
        dispatcher: Callable[..., Dispatcher], progress: Progress) -> None:
    patient = FakeRunner(progress, name="patient", timeout=None)
    hasty = FakeRunner(progress, name="hasty", timeout=0.05)
    pool = dispatcher(3, WATCH_EVERY)

    pool.submit(patient, envelopes("1-0"))
    pool.submit(hasty, envelopes("2-0", "3-0"))

    # By the time both of the hasty handler's messages have timed out one after the other,
    # the watchdog has passed over the patient one many times,
    await progress.until(lambda: len(hasty.cancelled) == 2)
    assert hasty.cancelled == [("2-0", True), ("3-0", True)]
    # and it still runs.
    assert patient.cancelled == [] and patient.running == 1
    patient.release("1-0")
    await progress.until(lambda: patient.finished == ["1-0"])


async def test_a_message_finishing_in_time_is_not_cancelled(
        dispatcher: Callable[..., Dispatcher], progress: Progress) -> None:
    quick = FakeRunner(progress, timeout=WITHIN, hold=False)
    pool = dispatcher(1, WATCH_EVERY)

    pool.submit(quick, envelopes("1-0", "2-0"))
    await progress.until(lambda: quick.finished == ["1-0", "2-0"])

    assert quick.cancelled == []


async def test_a_run_that_raises_does_not_kill_its_worker(
        dispatcher: Callable[..., Dispatcher], progress: Progress) -> None:
    runner = FakeRunner(progress, hold=False, fail=frozenset({"1-0", "2-0"}))
    pool = dispatcher(1)

    pool.submit(runner, envelopes("1-0", "2-0", "3-0"))
    await progress.until(lambda: runner.finished == ["3-0"])

    assert runner.started == ["1-0", "2-0", "3-0"]


async def test_wait_idle_reports_what_still_runs(
        dispatcher: Callable[..., Dispatcher], progress: Progress) -> None:
    runner = FakeRunner(progress)
    pool = dispatcher(2)
    cancel = asyncio.Event()
    assert await pool.wait_idle(cancel, grace=WITHIN) == 0

    pool.submit(runner, envelopes("1-0", "2-0"))
    await progress.until(lambda: runner.running == 2)
    cancel.set()  # a second signal: stop waiting
    assert await pool.wait_idle(cancel, grace=WITHIN) == 2

    for entry_id in ("1-0", "2-0"):
        runner.release(entry_id)
    assert await pool.wait_idle(asyncio.Event(), grace=WITHIN) == 0


async def test_close_cancels_the_running_messages_as_a_shutdown_not_a_timeout(
        progress: Progress) -> None:
    runner = FakeRunner(progress, timeout=WITHIN)
    pool = Dispatcher(2)
    pool.start(WATCH_EVERY)
    pool.submit(runner, envelopes("1-0", "2-0"))
    await progress.until(lambda: runner.running == 2)

    await asyncio.wait_for(pool.close(), WITHIN)

    assert sorted(runner.cancelled) == [("1-0", False), ("2-0", False)]
    assert runner.finished == []


# -- with the real runner ------------------------------------------------------------------


class Order(BaseModel):
    n: int


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


async def test_a_timeout_in_the_idempotency_look_up_leaves_the_worker_running(
        aredis: aioredis.Redis, executor: ThreadPoolExecutor, uid: str) -> None:
    """An entry taken back from a dead consumer is looked up on its own (a Redis round
    trip) before its handler runs; the watchdog may cancel it there."""
    handled: list[int] = []
    second: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(order: Order) -> None:
        handled.append(order.n)
        if not second.done():
            second.set_result(None)

    async def look_up(envelope: Envelope) -> bool:
        if envelope.entry_id == "1-0":
            await asyncio.Event().wait()  # Redis does not answer in time
        return False

    spec = build_spec(handle, f"orders-{uid}", {"name": f"stock-{uid}", "breaker": None,
                                                "idempotent": True})
    keys = HandlerKeys(spec.stream, spec.name)
    acker = AckBatcher(aredis)  # never flushed: nothing here reaches Redis
    settler = Settler(handler=spec.name, stream=spec.stream, keys=keys, consumer="c1",
                      acker=acker, idempotent=True, marker_ttl=60, retry_due=lambda _: None)
    limiter, in_flight = CapacityLimiter(1), InFlight()
    stack = build_stack(spec, executor=executor, timeout=0.05, app_middleware=[],
                        gate=None, diverted=set(), done_at_fetch={}, look_up_done=look_up)
    runner = Runner(name=spec.name, pool="default", stream=spec.stream, stack=stack,
                    settler=settler, limiter=limiter, in_flight=in_flight, timeout=0.05,
                    policy=spec.retry_policy)
    pool = Dispatcher(1)
    pool.start(WATCH_EVERY)
    try:
        # Given two messages on one worker, the first stuck in its look-up,
        fetched = [Envelope(spec.stream, e, {b"payload": f'{{"n":{n}}}'.encode()})
                   for n, e in ((1, "1-0"), (2, "2-0"))]
        limiter.borrow_over(2)
        in_flight.queued(2)
        pool.submit(runner, fetched)
        [worker] = [t for t in asyncio.all_tasks() if t.get_name() == "seawall-worker-0"]

        # when the first overruns its timeout,
        await asyncio.wait([worker, second], timeout=WITHIN,
                           return_when=asyncio.FIRST_COMPLETED)

        # then the worker lives on, the first message is settled (a retry) and the second
        # one runs.
        assert not worker.done(), "the pool's worker task ended with the timeout"
        assert handled == [2]
        await asyncio.wait_for(in_flight.drained(), WITHIN)
        assert acker.pending == 2  # the first one's retry and the second one's ack
    finally:
        await pool.close()
