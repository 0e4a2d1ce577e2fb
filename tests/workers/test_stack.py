"""A handler's stack, without Redis: the layers run in the documented order, the call
becomes an outcome of the right kind (follow-ups only with ``ok``/``fallback``), whatever
a middleware raises or returns wrongly is the message's failure, a timeout is a retry, and
the breaker and idempotency layers park, fall back or skip as their state says."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from tenacity import stop_after_attempt, wait_fixed

from queues import breaker_store as store
from queues.envelope import Envelope, EnvelopeError, follow_up_id
from queues.keys import HandlerKeys
from workers.breaker import CircuitBreaker
from workers.context import Context
from workers.errors import HandlerTimeout, NonRetryable
from workers.handler import HandlerSpec, build_spec
from workers.middleware import Call, Middleware, Next
from workers.outcome import Kind, Outcome
from workers.runtime.gate import BreakerGate
from workers.runtime.stack import EntryKey, build_stack

STREAM = "orders"
NAME = "billing.charge"
WAIT = 2.0
"""Every handler here waits this long between attempts, and has three attempts."""
PAYLOAD = b'{"n":1}'
WITHIN = 1.0
"""Longest wait for an event in a test: a bound, never a pause."""


class Order(BaseModel):
    n: int


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


def spec_of(func: Callable[..., Any], **options: Any) -> HandlerSpec:
    options = {"name": NAME, "breaker": None, "stop": stop_after_attempt(3),
               "wait": wait_fixed(WAIT), **options}
    return build_spec(func, STREAM, options)


async def _not_looked_up(envelope: Envelope) -> bool:
    raise AssertionError("no look-up expected")


def stack_of(spec: HandlerSpec, executor: ThreadPoolExecutor, *,
             app: Sequence[Middleware] = (), gate: BreakerGate | None = None,
             diverted: set[EntryKey] | None = None,
             done_at_fetch: dict[EntryKey, bool] | None = None,
             look_up: Callable[[Envelope], Awaitable[bool]] = _not_looked_up,
             timeout: float | None = None) -> Next:
    return build_stack(spec, executor=executor, timeout=timeout, app_middleware=app,
                       gate=gate, diverted=diverted if diverted is not None else set(),
                       done_at_fetch=done_at_fetch if done_at_fetch is not None else {},
                       look_up_done=look_up)


def call_of(fields: dict[bytes, bytes] | None = None, *, entry_id: str = "1-0",
            attempt: int = 1) -> Call:
    if fields is None:
        fields = {b"payload": PAYLOAD, b"id": b"m1", b"attempt": str(attempt).encode()}
    return Call(NAME, "default", STREAM, Envelope(STREAM, entry_id, fields), time.monotonic())


def _retry_window(before: float, after: float) -> tuple[int, int]:
    return int(before * 1000) + int(WAIT * 1000), int(after * 1000) + int(WAIT * 1000)


# -- order ---------------------------------------------------------------------------------


def _tracing(name: str, trace: list[str]) -> Middleware:
    async def layer(call: Call, call_next: Next) -> Outcome:
        trace.append(f"{name}>")
        outcome = await call_next(call)
        trace.append(f"<{name} {outcome.kind.value}")
        return outcome
    return layer


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_app_middleware_then_the_handlers_own_then_the_handler(
        executor: ThreadPoolExecutor, sync: bool) -> None:
    trace: list[str] = []

    async def handle_async(order: Order) -> None:
        trace.append("handler")

    def handle_sync(order: Order) -> None:
        trace.append("handler")

    # Given two app middleware and one of the handler's own,
    spec = spec_of(handle_sync if sync else handle_async,
                   middleware=[_tracing("own", trace)])
    stack = stack_of(spec, executor, app=[_tracing("app-1", trace), _tracing("app-2", trace)])

    # when a message runs,
    outcome = await stack(call_of())

    # then it goes in through app-1, app-2, own to the handler, and out the other way, each
    # layer seeing the outcome.
    assert outcome == Outcome.ok()
    assert trace == ["app-1>", "app-2>", "own>", "handler", "<own ok", "<app-2 ok",
                     "<app-1 ok"]


async def test_a_middleware_may_replace_the_outcome(executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None:
        raise ConnectionError("down")

    async def forgive(call: Call, call_next: Next) -> Outcome:
        outcome = await call_next(call)
        return Outcome.ok() if outcome.kind is Kind.RETRY else outcome

    outcome = await stack_of(spec_of(handle), executor, app=[forgive])(call_of())

    assert outcome == Outcome.ok()


# -- what the call becomes -----------------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_ok_carries_the_follow_ups_the_handler_published(
        executor: ThreadPoolExecutor, sync: bool) -> None:
    async def handle_async(order: Order, ctx: Context) -> None:
        await ctx.publish("payments", {"charge": order.n})
        await ctx.publish("audit", {"seen": order.n})

    def handle_sync(order: Order, ctx: Context) -> None:
        ctx.publish_sync("payments", {"charge": order.n})
        ctx.publish_sync("audit", {"seen": order.n})

    call = call_of()
    outcome = await stack_of(spec_of(handle_sync if sync else handle_async), executor)(call)

    assert outcome.kind is Kind.OK
    assert [(f.stream, f.message_id) for f in outcome.follow_ups] == [
        ("payments", follow_up_id("m1", NAME, "payments", 0)),
        ("audit", follow_up_id("m1", NAME, "audit", 0))]
    assert call.take_staged() == ()  # handed over to the outcome, once
    assert call.duration > 0 and not call.fallback


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_raising_handler_is_retried_when_its_policy_says(
        executor: ThreadPoolExecutor, sync: bool) -> None:
    error = ConnectionError("payment service down")

    async def handle_async(order: Order) -> None:
        raise error

    def handle_sync(order: Order) -> None:
        raise error

    before = time.time()
    outcome = await stack_of(spec_of(handle_sync if sync else handle_async), executor)(
        call_of())
    after = time.time()

    assert (outcome.kind, outcome.error, outcome.reason) == (
        Kind.RETRY, error, "ConnectionError")
    low, high = _retry_window(before, after)
    assert outcome.retry_at_ms is not None and low <= outcome.retry_at_ms <= high


async def test_a_handler_failing_its_last_attempt_is_dead_lettered(
        executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None:
        raise ConnectionError("still down")

    outcome = await stack_of(spec_of(handle), executor)(call_of(attempt=3))

    assert outcome.kind is Kind.DEAD_LETTER
    assert outcome.reason.startswith("attempts exhausted: 3 attempts")
    assert outcome.retry_at_ms is None


async def test_non_retryable_is_dead_lettered_at_once(executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None:
        raise NonRetryable("no such order")

    outcome = await stack_of(spec_of(handle), executor)(call_of())

    assert (outcome.kind, outcome.reason, outcome.error_type) == (
        Kind.DEAD_LETTER, "non-retryable: NonRetryable", "NonRetryable")


@pytest.mark.parametrize(("fields", "reason", "error"), [
    ({b"payload": b'{"n":"one"}'}, "invalid payload: validation failed", ValidationError),
    ({b"payload": b"not json"}, "undecodable payload: not valid JSON", ValidationError),
    ({b"id": b"m1"}, "invalid message: not a seawall envelope", EnvelopeError),
], ids=["invalid", "not-json", "no-payload"])
async def test_a_payload_that_cannot_be_decoded_is_dead_lettered_without_running(
        executor: ThreadPoolExecutor, fields: dict[bytes, bytes], reason: str,
        error: type[Exception]) -> None:
    ran: list[Order] = []

    async def handle(order: Order) -> None:
        ran.append(order)

    outcome = await stack_of(spec_of(handle), executor)(call_of(fields))

    assert (outcome.kind, outcome.reason) == (Kind.DEAD_LETTER, reason)
    assert isinstance(outcome.error, error)
    assert ran == []


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_failure_drops_what_the_handler_published(
        executor: ThreadPoolExecutor, sync: bool) -> None:
    async def handle_async(order: Order, ctx: Context) -> None:
        await ctx.publish("payments", {"charge": order.n})
        raise ConnectionError("down after publishing")

    def handle_sync(order: Order, ctx: Context) -> None:
        ctx.publish_sync("payments", {"charge": order.n})
        raise ConnectionError("down after publishing")

    call = call_of()
    outcome = await stack_of(spec_of(handle_sync if sync else handle_async), executor)(call)

    assert outcome.kind is Kind.RETRY
    assert outcome.follow_ups == ()
    assert call.take_staged() == ()


# -- Guard: what a middleware does wrong ---------------------------------------------------


async def test_a_middleware_raising_before_the_handler_fails_the_message_by_the_policy(
        executor: ThreadPoolExecutor) -> None:
    ran: list[int] = []

    async def handle(order: Order) -> None:
        ran.append(order.n)

    async def audit(call: Call, call_next: Next) -> Outcome:
        raise RuntimeError("the audit service refused")

    error_stack = stack_of(spec_of(handle), executor, app=[audit])
    before = time.time()
    outcome = await error_stack(call_of())
    after = time.time()
    last = await error_stack(call_of(attempt=3))

    assert (outcome.kind, outcome.error_type) == (Kind.RETRY, "RuntimeError")
    low, high = _retry_window(before, after)
    assert outcome.retry_at_ms is not None and low <= outcome.retry_at_ms <= high
    assert (last.kind, last.error_type) == (Kind.DEAD_LETTER, "RuntimeError")
    assert ran == []


async def test_a_middleware_raising_non_retryable_dead_letters(
        executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None: ...

    async def gatekeeper(call: Call, call_next: Next) -> Outcome:
        raise NonRetryable("tenant suspended")

    outcome = await stack_of(spec_of(handle), executor, app=[gatekeeper])(call_of())

    assert (outcome.kind, outcome.reason) == (Kind.DEAD_LETTER, "non-retryable: NonRetryable")


async def test_a_middleware_raising_after_the_handler_drops_its_follow_ups(
        executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order, ctx: Context) -> None:
        await ctx.publish("payments", {"charge": order.n})

    async def flaky_after(call: Call, call_next: Next) -> Outcome:
        await call_next(call)
        raise ConnectionError("metrics backend down")

    call = call_of()
    outcome = await stack_of(spec_of(handle), executor, app=[flaky_after])(call)

    assert (outcome.kind, outcome.error_type, outcome.follow_ups) == (
        Kind.RETRY, "ConnectionError", ())


async def test_a_middleware_returning_none_fails_with_a_type_error_naming_the_fix(
        executor: ThreadPoolExecutor) -> None:
    ran: list[int] = []

    async def handle(order: Order, ctx: Context) -> None:
        await ctx.publish("payments", {"charge": order.n})
        ran.append(order.n)

    async def forgetful(call: Call, call_next: Next) -> Outcome:
        await call_next(call)
        return None  # type: ignore[return-value]

    outcome = await stack_of(spec_of(handle, middleware=[forgetful]), executor)(call_of())

    assert ran == [1]
    assert (outcome.kind, outcome.error_type, outcome.follow_ups) == (
        Kind.RETRY, "TypeError", ())
    assert "return await call_next(call)" in str(outcome.error)
    assert repr(NAME) in str(outcome.error)


# -- timeouts ------------------------------------------------------------------------------


def _running(stack: Next, call: Call) -> asyncio.Task[Outcome]:
    """``call`` on its way down ``stack`` in a task of its own, as on a pool's worker."""
    async def run() -> Outcome:
        return await stack(call)
    return asyncio.create_task(run())


async def _time_out(stack: Next, call: Call, started: asyncio.Event) -> Outcome:
    """Run ``call`` down ``stack`` in a task, and once it has started do what the watchdog
    does to an overrunning message: mark the call, cancel the task."""
    task = _running(stack, call)
    await asyncio.wait_for(started.wait(), WITHIN)
    call.timed_out = True
    task.cancel()
    outcome = await asyncio.wait_for(task, WITHIN)
    assert task.cancelling() == 0  # the cancel became the failure, and was forgotten
    return outcome


def _is_timeout(outcome: Outcome) -> bool:
    return (outcome.kind is Kind.RETRY and isinstance(outcome.error, HandlerTimeout)
            and "ran longer than 0.05s" in str(outcome.error))


async def test_a_handler_past_its_timeout_is_retried_with_handler_timeout(
        executor: ThreadPoolExecutor) -> None:
    started = asyncio.Event()

    async def handle(order: Order, ctx: Context) -> None:
        await ctx.publish("payments", {"charge": order.n})
        started.set()
        await asyncio.Event().wait()

    call = call_of()
    outcome = await _time_out(stack_of(spec_of(handle), executor, timeout=0.05), call, started)

    assert _is_timeout(outcome)
    assert outcome.follow_ups == () and call.take_staged() == ()


async def test_a_sync_handler_past_its_timeout_is_retried_with_handler_timeout(
        executor: ThreadPoolExecutor) -> None:
    started, release = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()

    def handle(order: Order) -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait(WITHIN)

    try:
        outcome = await _time_out(stack_of(spec_of(handle), executor, timeout=0.05),
                                  call_of(), started)
    finally:
        release.set()

    assert _is_timeout(outcome)


async def test_a_timeout_inside_a_middleware_is_retried_with_handler_timeout(
        executor: ThreadPoolExecutor) -> None:
    started = asyncio.Event()

    async def handle(order: Order) -> None:
        raise AssertionError("the middleware never let it run")

    async def slow_lookup(call: Call, call_next: Next) -> Outcome:
        started.set()
        await asyncio.Event().wait()
        return await call_next(call)

    outcome = await _time_out(
        stack_of(spec_of(handle), executor, app=[slow_lookup], timeout=0.05), call_of(),
        started)

    assert _is_timeout(outcome)


@pytest.mark.parametrize("with_middleware", [False, True])
async def test_a_cancel_that_is_no_timeout_cancels_the_stack(
        executor: ThreadPoolExecutor, with_middleware: bool) -> None:
    started = asyncio.Event()

    async def handle(order: Order) -> None:
        started.set()
        await asyncio.Event().wait()

    app = [_tracing("app", [])] if with_middleware else []
    task = _running(stack_of(spec_of(handle), executor, app=app), call_of())
    await asyncio.wait_for(started.wait(), WITHIN)

    # When the pool shuts down (a cancel, the call not timed out),
    task.cancel()

    # then the stack is cancelled: no outcome, the message stays pending for the next run.
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WITHIN)


# -- the breaker ---------------------------------------------------------------------------


class RecordingGate(BreakerGate):
    """A real gate that also remembers what it was told to record."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__(breaker, HandlerKeys(STREAM, NAME), NAME, lease_ttl=10)
        self.recorded: list[str | None] = []
        self.probes_done = 0

    def record(self, error: BaseException | None, duration: float) -> None:
        self.recorded.append(None if error is None else type(error).__name__)
        super().record(error, duration)

    def record_probe_done(self) -> None:
        self.probes_done += 1
        super().record_probe_done()


def _open(gate: BreakerGate) -> int:
    """Shut the gate as a consumer that heard "open" does; returns when it may reopen."""
    gate.state = store.OPEN
    gate.open_until_ms = int(time.time() * 1000) + 30_000
    return gate.open_until_ms


async def test_an_open_breaker_without_a_fallback_parks_the_message_until_it_may_close(
        executor: ThreadPoolExecutor) -> None:
    ran: list[int] = []

    async def handle(order: Order) -> None:
        ran.append(order.n)

    gate = RecordingGate(CircuitBreaker())
    resume_at = _open(gate)

    outcome = await stack_of(spec_of(handle, breaker=CircuitBreaker()), executor,
                             gate=gate)(call_of())

    assert outcome == Outcome.parked(resume_at)
    assert outcome.error is None and outcome.follow_ups == ()
    assert ran == [] and gate.recorded == []


async def test_an_open_breaker_runs_the_fallback_and_acks_with_its_follow_ups(
        executor: ThreadPoolExecutor) -> None:
    ran: list[str] = []

    async def handle(order: Order, ctx: Context) -> None:
        ran.append("handler")

    async def later(order: Order, ctx: Context) -> None:
        ran.append("fallback")
        await ctx.publish("payments-later", {"charge": order.n})

    gate = RecordingGate(CircuitBreaker())
    _open(gate)
    call = call_of()

    outcome = await stack_of(spec_of(handle, breaker=CircuitBreaker(), fallback=later),
                             executor, gate=gate)(call)

    assert ran == ["fallback"]
    assert outcome.kind is Kind.FALLBACK and call.fallback
    [follow_up] = outcome.follow_ups
    # The fallback publishes under ids of its own, not the handler's.
    assert follow_up.message_id == follow_up_id("m1", f"{NAME}:fallback", "payments-later", 0)
    assert follow_up.message_id != follow_up_id("m1", NAME, "payments-later", 0)
    assert gate.recorded == []  # a fallback proves nothing about the dependency


async def test_a_failing_fallback_fails_the_message_by_the_policy(
        executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None: ...

    def later(order: Order) -> None:
        raise ConnectionError("the fallback's queue is down too")

    gate = RecordingGate(CircuitBreaker())
    _open(gate)
    outcome = await stack_of(spec_of(handle, breaker=CircuitBreaker(), fallback=later),
                             executor, gate=gate)(call_of())

    assert (outcome.kind, outcome.error_type) == (Kind.RETRY, "ConnectionError")


async def test_a_message_read_while_the_breaker_was_shut_is_diverted_once(
        executor: ThreadPoolExecutor) -> None:
    ran: list[int] = []

    async def handle(order: Order) -> None:
        ran.append(order.n)

    gate = RecordingGate(CircuitBreaker())  # closed now,
    diverted: set[EntryKey] = {(STREAM, "1-0")}  # but shut when this entry was read
    stack = stack_of(spec_of(handle, breaker=CircuitBreaker()), executor, gate=gate,
                     diverted=diverted)

    first = await stack(call_of())
    second = await stack(call_of())

    assert first.kind is Kind.PARKED and diverted == set()
    assert second.kind is Kind.OK and ran == [1]


async def test_a_closed_breaker_runs_the_handler_and_records_each_result(
        executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None:
        if order.n == 2:
            raise ConnectionError("down")

    gate = RecordingGate(CircuitBreaker())
    stack = stack_of(spec_of(handle, breaker=CircuitBreaker()), executor, gate=gate)

    kinds = [(await stack(call_of({b"payload": f'{{"n":{n}}}'.encode()}))).kind
             for n in (1, 2)]

    assert kinds == [Kind.OK, Kind.RETRY]
    assert gate.recorded == [None, "ConnectionError"]
    assert gate.probes_done == 2


async def test_a_skipped_message_is_not_recorded_by_the_breaker(
        executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None:
        raise AssertionError("completed before: must not run")

    gate = RecordingGate(CircuitBreaker())
    stack = stack_of(spec_of(handle, breaker=CircuitBreaker(), idempotent=True), executor,
                     gate=gate, done_at_fetch={(STREAM, "1-0"): True})

    outcome = await stack(call_of())

    assert outcome == Outcome.skipped()
    assert gate.recorded == [] and gate.probes_done == 1


# -- idempotency ---------------------------------------------------------------------------


async def test_a_message_found_completed_at_fetch_is_skipped(
        executor: ThreadPoolExecutor) -> None:
    ran: list[int] = []

    async def handle(order: Order) -> None:
        ran.append(order.n)

    done_at_fetch = {(STREAM, "1-0"): True, (STREAM, "2-0"): False}
    stack = stack_of(spec_of(handle, idempotent=True), executor, done_at_fetch=done_at_fetch)

    done = await stack(call_of(entry_id="1-0"))
    not_done = await stack(call_of(entry_id="2-0"))

    assert (done, not_done) == (Outcome.skipped(), Outcome.ok())
    assert ran == [1]
    assert done_at_fetch == {}  # each answer used once


async def test_a_message_not_looked_up_at_fetch_is_looked_up_on_its_own(
        executor: ThreadPoolExecutor) -> None:
    ran: list[int] = []
    asked: list[str] = []

    async def handle(order: Order) -> None:
        ran.append(order.n)

    async def look_up(envelope: Envelope) -> bool:
        asked.append(envelope.entry_id)
        return envelope.entry_id == "1-0"

    stack = stack_of(spec_of(handle, idempotent=True), executor, look_up=look_up)

    outcomes = [await stack(call_of(entry_id=e)) for e in ("1-0", "2-0")]

    assert outcomes == [Outcome.skipped(), Outcome.ok()]
    assert asked == ["1-0", "2-0"] and ran == [1]


async def _redis_gone(envelope: Envelope) -> bool:
    raise ConnectionError("Redis went away")


async def test_a_look_up_that_fails_is_the_messages_failure_inside_user_middleware(
        executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None:
        raise AssertionError("not looked up")

    stack = stack_of(spec_of(handle, idempotent=True), executor, look_up=_redis_gone,
                     app=[_tracing("app", [])])

    outcome = await stack(call_of())

    assert (outcome.kind, outcome.error_type) == (Kind.RETRY, "ConnectionError")


async def test_without_user_middleware_a_failed_look_up_is_left_to_the_runner(
        executor: ThreadPoolExecutor) -> None:
    """No Guard without user middleware: what a built-in layer raises reaches the runner,
    which fails the message by its policy (tests/workers/test_runner.py)."""
    async def handle(order: Order) -> None:
        raise AssertionError("not looked up")

    stack = stack_of(spec_of(handle, idempotent=True), executor, look_up=_redis_gone)

    with pytest.raises(ConnectionError, match="Redis went away"):
        await stack(call_of())


async def test_a_handler_that_is_not_idempotent_is_never_looked_up(
        executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None: ...

    # (_not_looked_up raises if asked; a stale done_at_fetch answer is ignored)
    outcome = await stack_of(spec_of(handle), executor,
                             done_at_fetch={(STREAM, "1-0"): True})(call_of())

    assert outcome == Outcome.ok()
