"""The apps ``bench/sagas.py`` drains: a three-step checkout (charge -> reserve -> ship),
once as a saga and once as three plain handlers chained by ``ctx.publish``, with the same
step bodies, one pool process each.

``BENCH_SAGA_MODE`` (``saga`` or ``plain``) and ``BENCH_SAGA_PREFIX`` (a name unique to the
run) come from the environment, so that one module serves every run; :func:`build` makes
either app for the benchmark script itself (it starts the sagas, or publishes the orders).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from sagas import Saga
from workers import App, Context

STEPS = ("charge", "reserve", "ship")
STREAMS = ("orders", "payments", "stock")
"""The stream each step reacts to, in order: step k publishes to stream k + 1."""
POOL = "bench"


class Order(BaseModel):
    n: int
    order_id: str
    amount_cents: int


class Charged(BaseModel):
    order_id: str
    payment_id: str
    amount_cents: int


class Reserved(BaseModel):
    order_id: str
    reservation_id: str


def plain_stream(prefix: str, stream: str) -> str:
    """The plain chain's stream for one step (its own, per run)."""
    return f"{prefix}-{stream}"


def build(mode: str, prefix: str) -> tuple[App, Saga | None]:
    """The app of ``mode`` (``saga`` or ``plain``) for the run ``prefix``, and its saga."""
    app = App("bench-sagas")
    app.pool(POOL, concurrency=int(os.environ.get("BENCH_CONCURRENCY", "200")), processes=1)
    if mode == "saga":
        return app, _saga(app, prefix)
    if mode == "plain":
        _plain(app, prefix)
        return app, None
    raise ValueError(f"BENCH_SAGA_MODE must be 'saga' or 'plain', got {mode!r}")


# The step bodies both apps share: validate, do next to nothing, publish the next event.

async def _charge(order: Order, ctx: Context, to: str) -> None:
    await ctx.publish(to, Charged(order_id=order.order_id, payment_id=f"pay-{order.n}",
                                  amount_cents=order.amount_cents))


async def _reserve(payment: Charged, ctx: Context, to: str) -> None:
    await ctx.publish(to, Reserved(order_id=payment.order_id,
                                   reservation_id=f"res-{payment.order_id}"))


async def _ship(reservation: Reserved, ctx: Context) -> None:
    return None


def _saga(app: App, prefix: str) -> Saga:
    saga = Saga(app, prefix, deadline=timedelta(minutes=10))
    orders, payments, stock = STREAMS

    @saga.step(orders, pool=POOL)
    async def charge(order: Order, ctx: Context) -> None:
        await _charge(order, ctx, payments)

    @saga.step(payments, pool=POOL)
    async def reserve(payment: Charged, ctx: Context) -> None:
        await _reserve(payment, ctx, stock)

    @saga.step(stock, pool=POOL)
    async def ship(reservation: Reserved, ctx: Context) -> None:
        await _ship(reservation, ctx)

    # Compensations: never called in the happy path, but declared, so that every commit
    # carries what a compensation would need (the step's input, no memo given).
    @charge.compensate
    async def refund(order: Order) -> None:
        return None

    @reserve.compensate
    async def release(payment: Charged) -> None:
        return None

    @ship.compensate
    async def recall(reservation: Reserved) -> None:
        return None

    return saga


def _plain(app: App, prefix: str) -> None:
    orders, payments, stock = (plain_stream(prefix, s) for s in STREAMS)
    policy: dict[str, Any] = {"pool": POOL}

    @app.handler(orders, name="chain.charge", **policy)
    async def charge(order: Order, ctx: Context) -> None:
        await _charge(order, ctx, payments)

    @app.handler(payments, name="chain.reserve", **policy)
    async def reserve(payment: Charged, ctx: Context) -> None:
        await _reserve(payment, ctx, stock)

    @app.handler(stock, name="chain.ship", **policy)
    async def ship(reservation: Reserved, ctx: Context) -> None:
        await _ship(reservation, ctx)


app, saga = build(os.environ.get("BENCH_SAGA_MODE", "saga"),
                  os.environ.get("BENCH_SAGA_PREFIX", "benchsaga"))
