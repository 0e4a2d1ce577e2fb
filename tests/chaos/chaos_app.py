"""The app every chaos scenario runs (``chaos.chaos_app:app``), configured from the
environment so that one module serves every run, test or soak round.

``CHAOS_PREFIX`` names the run's streams, handlers and witness keys; ``CHAOS_WITNESS`` is
the Redis the handlers record what they did in: not the Redis under test, so a fault there
cannot lose the record (the scenarios read it to count duplicates and losses).

On the stream ``<prefix>-load`` (each message ``{"n": ...}``):

* ``plain`` records each run;
* ``idem`` (``idempotent=True``) records each run, and its middleware records each
  delivery it absorbed (the outcome ``skipped``).

On the stream ``<prefix>-side`` (every fifth message is published there too):

* ``flaky`` fails the first attempt of every fifth of its messages (a durable delayed retry) and
  dead-letters every message while the witness flag ``reject`` is up;
* ``guarded`` sits behind a circuit breaker (the only handler with one) and fails while
  the flag ``down`` is up, and takes a second per message while the flag ``slow`` is.

And a saga ``<prefix>-checkout``: ``reserve`` then ``charge``; ``charge`` fails for good for
every fourth order, so ``reserve`` is compensated by ``release``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_fixed

from sagas import Saga
from workers import App, Call, CircuitBreaker, Context, Next, NonRetryable, Outcome
from workers.outcome import Kind

WITNESS_URL = os.environ.get("CHAOS_WITNESS", "redis://127.0.0.1:6379/0")
CLAIM_AFTER = float(os.environ.get("CHAOS_CLAIM_AFTER", "10"))
CONCURRENCY = int(os.environ.get("CHAOS_CONCURRENCY", "64"))
PROCESSES = int(os.environ.get("CHAOS_PROCESSES", "2"))
OPEN_FOR = float(os.environ.get("CHAOS_OPEN_FOR", "2"))
SAGA_DEADLINE = float(os.environ.get("CHAOS_SAGA_DEADLINE", "300"))

LOAD_HANDLERS = ("plain", "idem")
"""The handlers of the load stream (every message), by short name."""
SIDE_HANDLERS = ("flaky", "guarded")
"""The handlers of the side stream (every ``SIDE_EVERY``-th message), by short name."""
HANDLERS = LOAD_HANDLERS + SIDE_HANDLERS
SIDE_EVERY = 5
SAGA_EVERY = 20
"""An order saga is started for every this many load messages."""


def declined(n: int) -> bool:
    """Every fourth order saga's charge is declined (the saga is compensated)."""
    return (n // SAGA_EVERY) % 4 == 0
SAGA_STEPS = ("reserve", "charge", "release")
"""The saga's steps and compensation, as their runs are recorded."""


class Names:
    """Every name of one run, from its prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.app = f"chaos-{prefix}"
        self.load = f"{prefix}-load"
        self.side = f"{prefix}-side"
        self.orders = f"{prefix}-orders"
        self.payments = f"{prefix}-payments"
        self.saga = f"{prefix}-checkout"

    def handler(self, short: str) -> str:
        return f"{self.prefix}.{short}"

    def witness(self, what: str) -> str:
        """A key in the witness Redis: ``runs:<handler>``, ``absorbed``, ``flag:<name>``."""
        return f"chaos:{self.prefix}:{what}"


class Msg(BaseModel):
    n: int


class Order(BaseModel):
    n: int


_witness: aioredis.Redis | None = None
_flags: dict[str, tuple[float, bool]] = {}


def witness() -> aioredis.Redis:
    global _witness
    if _witness is None:
        _witness = aioredis.Redis.from_url(WITNESS_URL)
    return _witness


class _Recorder:
    """Group commit of witness records: a handler awaits its own record (a run is recorded
    before its handler returns, so none is missed), but the records of every handler
    running at the same moment go in one pipeline, not a round trip each."""

    def __init__(self) -> None:
        self._batch: list[tuple[str, str, asyncio.Future[None]]] = []

    async def record(self, key: str, field: str) -> None:
        done = asyncio.get_running_loop().create_future()
        self._batch.append((key, field, done))
        if len(self._batch) == 1:
            asyncio.get_running_loop().call_soon(self._start_flush)
        await done

    def _start_flush(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.ensure_future(self._flush(batch))
        _flushes.add(task)
        task.add_done_callback(_flushes.discard)

    async def _flush(self, batch: list[tuple[str, str, asyncio.Future[None]]]) -> None:
        try:
            async with witness().pipeline(transaction=False) as pipe:
                for key, field, _ in batch:
                    pipe.hincrby(key, field, 1)
                await pipe.execute()
        except Exception as exc:
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, _, done in batch:
            if not done.done():
                done.set_result(None)


_recorder = _Recorder()
_flushes: set[asyncio.Future[None]] = set()


async def _record(key: str, n: int | str) -> None:
    await _recorder.record(key, str(n))


async def _flag(key: str) -> bool:
    """A witness flag, read at most every 0.2 s per process (not a round trip a message)."""
    now = time.monotonic()
    cached = _flags.get(key)
    if cached is None or now - cached[0] > 0.2:
        cached = (now, bool(await witness().exists(key)))
        _flags[key] = cached
    return cached[1]


def build(prefix: str) -> tuple[App, Saga]:
    """The app of the run ``prefix`` and its saga (the producer builds the same)."""
    names = Names(prefix)

    async def record(what: str, n: int | str) -> None:
        await _record(names.witness(what), n)

    async def flag(name: str) -> bool:
        return await _flag(names.witness(f"flag:{name}"))

    app = App(names.app)
    app.pool("main", concurrency=CONCURRENCY, processes=PROCESSES, claim_after=CLAIM_AFTER,
             max_deliveries=1000, timeout=60)
    app.pool("sagas", concurrency=CONCURRENCY, processes=1, claim_after=CLAIM_AFTER,
             max_deliveries=1000, timeout=60)

    patient: dict[str, Any] = {"stop": stop_after_attempt(10_000), "wait": wait_fixed(1)}
    # (retries that outlast any fault a scenario makes: a message ends handled, not dead)
    @app.handler(names.load, name=names.handler("plain"), pool="main", breaker=None,
                 **patient)
    async def plain(msg: Msg) -> None:
        await record("runs:plain", msg.n)

    async def absorbed(call: Call, call_next: Next) -> Outcome:
        outcome = await call_next(call)
        if outcome.kind is Kind.SKIPPED:
            await record("absorbed", call.envelope.message_id)
        return outcome

    @app.handler(names.load, name=names.handler("idem"), pool="main", idempotent=True,
                 middleware=[absorbed], breaker=None, **patient)
    async def idem(msg: Msg) -> None:
        await record("runs:idem", msg.n)

    @app.handler(names.side, name=names.handler("flaky"), pool="main", breaker=None,
                 stop=stop_after_attempt(10_000), wait=wait_fixed(1.5))
    async def flaky(msg: Msg, ctx: Context) -> None:
        if await flag("reject"):
            raise NonRetryable("rejected while the reject flag is up")
        if msg.n % 25 == 0 and ctx.attempt == 1:
            raise RuntimeError("first attempt of every fifth message fails")
        await record("runs:flaky", msg.n)

    @app.handler(names.side, name=names.handler("guarded"), pool="main", **patient,
                 breaker=CircuitBreaker(window=10, min_calls=5, failure_rate=0.5,
                                        open_for=OPEN_FOR))
    async def guarded(msg: Msg) -> None:
        if await flag("down"):
            raise ConnectionError("the guarded dependency is down")
        if await flag("slow"):
            await asyncio.sleep(1.0)  # (a half-open probe then lasts long enough to see)
        await record("runs:guarded", msg.n)

    checkout = Saga(app, names.saga, deadline=SAGA_DEADLINE)

    @checkout.step(names.orders, pool="sagas", **patient)
    async def reserve(order: Order, ctx: Context) -> None:
        await record("runs:reserve", order.n)
        ctx.saga.remember({"n": order.n})
        await ctx.publish(names.payments, order)

    @checkout.step(names.payments, pool="sagas", **patient)
    async def charge(order: Order, ctx: Context) -> None:
        if declined(order.n):
            raise ctx.saga.abort("every fourth order is declined")
        await record("runs:charge", order.n)

    @reserve.compensate(**patient)
    async def release(memo: Order) -> None:
        await record("runs:release", memo.n)

    return app, checkout


app, checkout = build(os.environ.get("CHAOS_PREFIX", "chaos"))
