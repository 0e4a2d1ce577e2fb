"""The checkout saga as a ``seawall run`` app (the source :meth:`E2E.write_app` puts after
its header), with the crash points the crash tests choose from, and its twin in the test's
process: the same saga type declared on the test's producer app, to start sagas and to
find the saga's keys (nothing runs its handlers there).

The app's external service is the one of :class:`saga_helpers.Service` (prefix
``PREFIX + "svc:"``), each journal line naming the process that made the call; each
finished saga's outcome is pushed to ``PREFIX + "outcomes"``; each process about to die at
a crash point pushes ``"<where>|<pid>"`` to ``PREFIX + "doomed"``; each handler failing
its first attempt on purpose pushes ``"<saga id>|<where>"`` to ``PREFIX + "flaked"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from e2e.support import E2E
from saga_checks import handler_names
from saga_helpers import STEPS, Memo, Order

from sagas import Saga, SagaOutcome
from workers.app import App
from workers.context import Context

CRASHES = ("in the handler", "before the commit", "after the commit", "every time")
"""Where a crash test kills the pool process, at its target handler ("reserve",
"undo reserve"): while the handler runs (before its side effect); after the handler
returned and before its commit (a middleware holds the outcome); right after its commit
(an observer, told once the commit is confirmed, SIGKILLs its own process); or every
time the handler starts (it SIGKILLs its own process: a poison message)."""

_BODY = '''
import signal

from tenacity import stop_after_attempt, wait_none

from sagas import Saga, SagaOutcome
from workers.outcome import Kind


class Order(BaseModel):
    n: int
    abort_at: str = ""
    flaky: str = ""


class Memo(BaseModel):
    n: int
    key: str
    flaky: str = ""


app.pool("sagas", processes=PROCESSES, concurrency=CONCURRENCY, claim_after=30,
         max_deliveries=MAX_DELIVERIES)
checkout = Saga(app, SAGA)
POLICY = {"pool": "sagas", "stop": stop_after_attempt(3), "wait": wait_none(),
          "breaker": None}
HANDLERS = {**{s: f"{SAGA}.{s}" for s in ("charge", "reserve", "ship")},
            **{f"undo {s}": f"{SAGA}.{s}.undo" for s in ("charge", "reserve", "ship")}}


async def call_service(action, step, key):
    """The external service: applied / undone counts per idempotency key, and a journal
    (count and journal line together, so a SIGKILL cannot split them), answering after
    SLEEP seconds (``E2E_SLEEP``)."""
    if SLEEP:
        await asyncio.sleep(SLEEP)
    async with aredis().pipeline(transaction=True) as pipe:
        pipe.hincrby(PREFIX + ("svc:applied" if action == "do" else "svc:undone"),
                     f"{step}|{key}", 1)
        pipe.rpush(PREFIX + "svc:journal", f"{action} {step} {key} {os.getpid()}")
        await pipe.execute()


async def crash_here(where):
    """A crash point: tell the test which process to kill, and wait for it."""
    await aredis().rpush(PREFIX + "doomed", f"{where}|{os.getpid()}")
    await asyncio.sleep(3600)


async def first_time(where):
    return await aredis().set(PREFIX + "once:" + where, b"1", nx=True)


async def crash_points(where):
    if TARGET != where:
        return
    if CRASH == "in the handler" and await first_time(where):
        await crash_here(where)
    if CRASH == "every time":
        await aredis().rpush(PREFIX + "doomed", f"{where}|{os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)


async def flake(where, ctx):
    await aredis().rpush(PREFIX + "flaked", f"{ctx.saga.id}|{where}")
    raise ConnectionError("the service did not answer")


async def forward(step, order, ctx, then):
    await crash_points(step)
    if order.flaky == step and ctx.attempt == 1:
        await flake(step, ctx)
    if order.abort_at == step:
        raise ctx.saga.abort("out of stock")
    await call_service("do", step, ctx.saga.key)
    ctx.saga.remember(Memo(n=order.n, key=ctx.saga.key, flaky=order.flaky))
    if then is not None:
        await ctx.publish(then, order)


@checkout.step(STREAMS[0], **POLICY)
async def charge(order: Order, ctx: Context) -> None:
    await forward("charge", order, ctx, STREAMS[1])


@checkout.step(STREAMS[1], **POLICY)
async def reserve(order: Order, ctx: Context) -> None:
    await forward("reserve", order, ctx, STREAMS[2])


@checkout.step(STREAMS[2], **POLICY)
async def ship(order: Order, ctx: Context) -> None:
    await forward("ship", order, ctx, None)


def undo_of(step):
    async def undo(memo: Memo, ctx: Context) -> None:
        await crash_points("undo " + step)
        if memo.flaky == "undo " + step and ctx.attempt == 1:
            await flake("undo " + step, ctx)
        await call_service("undo", step, memo.key)
    undo.__name__ = "undo_" + step
    return undo


for declared in (charge, reserve, ship):
    declared.compensate(undo_of(declared.name), **POLICY)


@checkout.on_outcome(pool="sagas", breaker=None)
async def heard(outcome: SagaOutcome) -> None:
    await aredis().rpush(PREFIX + "outcomes", f"{outcome.saga_id} {outcome.state}")


if CRASH == "before the commit":
    @app.middleware
    async def hold_the_outcome(call, call_next):
        outcome = await call_next(call)
        if (call.handler == HANDLERS[TARGET] and outcome.kind is Kind.OK
                and await first_time("returned")):
            await crash_here(TARGET)  # the side effect happened; the commit never leaves
        return outcome


if CRASH == "after the commit":
    @app.observe
    def die_after_the_commit(call, outcome):
        if (call.handler == HANDLERS[TARGET] and outcome.kind is Kind.OK
                and sync_redis.set(PREFIX + "once:committed", b"1", nx=True)):
            sync_redis.rpush(PREFIX + "doomed", f"{TARGET}|{os.getpid()}")
            os.kill(os.getpid(), signal.SIGKILL)
'''


def app_source(saga: str, streams: Sequence[str], *, crash: str | None = None,
               target: str | None = None, processes: int = 1, concurrency: int = 8,
               max_deliveries: int = 5) -> str:
    """The app module's source after :meth:`E2E.write_app`'s header: the checkout saga
    ``saga`` on ``streams`` (orders, payments, stock) in the pool ``sagas``, dying at
    ``crash`` in ``target`` if given; orders are :class:`CheckoutOrder`."""
    assert crash is None or crash in CRASHES
    config = (f"SAGA = {saga!r}\nSTREAMS = {tuple(streams)!r}\nCRASH = {crash!r}\n"
              f"TARGET = {target!r}\nPROCESSES = {processes!r}\n"
              f"CONCURRENCY = {concurrency!r}\nMAX_DELIVERIES = {max_deliveries!r}\n")
    return config + _BODY


class CheckoutOrder(Order):
    """The app's order: it aborts at the step ``abort_at`` names, and the handler ``flaky``
    names (a step, or ``undo <step>``) fails its first attempt (before its side effect)."""

    abort_at: str = ""
    flaky: str = ""


def twin(app: App, saga: str, streams: Sequence[str]) -> Saga:
    """The app's saga type declared on ``app`` (the test's producer): same name, steps,
    streams, compensations and outcome handler, so the same layout and keys."""
    twin_saga = Saga(app, saga)

    async def step(order: CheckoutOrder, ctx: Context) -> None:
        raise AssertionError("the twin's handlers never run")

    async def undo(memo: Memo, ctx: Context) -> None:
        raise AssertionError("the twin's handlers never run")

    for name, stream in zip(STEPS, streams, strict=True):
        declared = twin_saga.step(stream, name=name, pool="sagas")(step)
        declared.compensate(undo)

    @twin_saga.on_outcome(pool="sagas")
    async def heard(outcome: SagaOutcome) -> None:
        raise AssertionError("the twin's handlers never run")

    return twin_saga


def twin_in(e2e: E2E) -> Saga:
    """The test's checkout saga type (``checkout<uid>``, on streams of the test), declared
    on its producer app; its handler names are removed from the registry afterwards (the
    saga's keys are the test's to remove: :func:`saga_helpers.cleanup_saga`)."""
    streams = [e2e.stream(s) for s in ("orders", "payments", "stock")]
    declared = twin(e2e.app, f"checkout{e2e.uid}", streams)
    e2e.handler_names.extend(handler_names(declared))
    return declared
