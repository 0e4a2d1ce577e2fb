"""The shop's app: a checkout saga over four pools (bulkheads), and the handlers beside it.

The checkout is a saga (``sagas.Saga``): charge the card, reserve the stock, ship. When a
step fails for good (a declined card, an item out of stock, a checkout not through within
its deadline), the steps that committed are undone, last first: the stock released, the
payment refunded. The order confirmation is a plain handler on the last event.

Why four pools: a payment provider that hangs must not stop stock being reserved or
released, parcels being shipped or emails being sent. Each pool is its own OS process with
its own concurrency and timeouts, so a slow step starves only itself. A compensation runs in
its step's pool (a refund needs the payment provider, as the charge does).

Run it with ``seawall run examples.shop.app:app`` (every pool) or ``--pool payments``
(one pool per deployment, as ``compose.yml`` does), beside ``python -m
examples.shop.producer``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from datetime import timedelta

from tenacity import stop_after_attempt, wait_exponential_jitter

from examples.shop import provider, warehouse
from examples.shop.models import OrderPlaced, OrderShipped, PaymentCaptured, StockReserved
from sagas import Saga, SagaOutcome
from workers import App, CircuitBreaker, Context

log = logging.getLogger("seawall.examples.shop")

app = App("shop")
app.pool("payments", concurrency=8, timeout=15.0)
"""A third-party API: few calls at once, so a slow provider cannot pile up work."""
app.pool("inventory", concurrency=16)
app.pool("shipping", concurrency=16)
app.pool("email", concurrency=4, timeout=10.0)
"""Sync handlers: they run in this pool's own four threads, away from the event loops."""


def _deadline() -> timedelta:
    try:
        seconds = float(os.environ.get("SHOP_CHECKOUT_DEADLINE", "900"))
    except ValueError:
        seconds = 900.0
    return timedelta(seconds=seconds if seconds > 0 else 900.0)


checkout = Saga(app, "checkout", deadline=_deadline())
"""A checkout not through within its deadline (``SHOP_CHECKOUT_DEADLINE`` seconds, default
15 minutes; ``seawall demo --deadline``) is stopped and compensated."""


@checkout.step(
    "orders",
    pool="payments",
    timeout=10.0,
    # A provider outage is retried with backoff (a declined card aborts, below).
    stop=stop_after_attempt(4),
    wait=wait_exponential_jitter(multiplier=0.5, max=5.0),
    breaker=CircuitBreaker(window=20, min_calls=10, failure_rate=0.5, open_for=10.0),
)
async def charge(order: OrderPlaced, ctx: Context) -> None:
    """Charge the order's total, then announce the payment to the next step."""
    try:
        payment_id = await provider.charge(order.order_id, order.total_cents)
    except provider.CardDeclined as exc:
        # A decision, not a failure: no retries, no dead letter, the breaker is not told.
        raise ctx.saga.abort(str(exc)) from exc
    payment = PaymentCaptured(order_id=order.order_id, customer_email=order.customer_email,
                              payment_id=payment_id, amount_cents=order.total_cents,
                              lines=order.lines)
    ctx.saga.remember(payment)  # what refund() gets
    await ctx.publish("payments", payment)


@charge.compensate(
    # A refund must not give up while the provider is down: many attempts, long waits.
    # Its breaker is its own (the same provider, but other calls); it may open on the
    # failures of an outage just after it ended (a count-based window), so it probes
    # again sooner than the charge's: refunds are few, and owed.
    stop=stop_after_attempt(20),
    wait=wait_exponential_jitter(multiplier=1.0, max=30.0),
    breaker=CircuitBreaker(window=20, min_calls=10, failure_rate=0.5, open_for=5.0),
)
async def refund(payment: PaymentCaptured) -> None:
    """Undo ``charge``: give the payment back (idempotent at the provider)."""
    await provider.refund(payment.payment_id, payment.amount_cents)


@checkout.step("payments", pool="inventory", undo_if_failed=True)
async def reserve(payment: PaymentCaptured, ctx: Context) -> None:
    """Set the paid order's stock aside. ``undo_if_failed``: an order found short may have
    had some lines set aside already, so when this step fails for good its own
    compensation runs too (release, then refund)."""
    try:
        reservation_id = await warehouse.reserve(payment.order_id, payment.lines)
    except warehouse.OutOfStock as exc:
        raise ctx.saga.abort(f"out of stock: {exc}") from exc
    await ctx.publish("reservations", StockReserved(
        order_id=payment.order_id, customer_email=payment.customer_email,
        reservation_id=reservation_id, lines=payment.lines))


@reserve.compensate
async def release(payment: PaymentCaptured) -> None:
    """Undo ``reserve`` (all of it, or what it set aside before it found an item short). It
    remembered nothing, so this gets the step's own input (the payment event); the
    warehouse keeps one reservation per order."""
    await warehouse.release(payment.order_id)


@checkout.step("reservations", pool="shipping")
async def ship(reservation: StockReserved, ctx: Context) -> None:
    """Book a courier. Its event goes to ``shipments``, a stream no step of the saga reacts
    to: so this is the last step, and its commit completes the saga. Nothing undoes a
    parcel that left, so it has no compensation."""
    await asyncio.sleep(random.uniform(0.02, 0.08))
    await ctx.publish("shipments", OrderShipped(
        order_id=reservation.order_id, customer_email=reservation.customer_email,
        tracking_number=f"TRK{random.randrange(10**9):09d}"))


@app.handler("shipments", name="email.confirm", pool="email")
def confirm(shipped: OrderShipped) -> None:
    """Send the shipping confirmation. A plain handler on a plain stream, and a plain
    ``def``: blocking code (an SMTP client) is fine here, because it runs in the email
    pool's threads, never on an event loop."""
    time.sleep(0.02)
    log.debug("confirmation sent", extra={"order_id": shipped.order_id,
                                          "to": shipped.customer_email})


@checkout.on_outcome(pool="email")
def notify(outcome: SagaOutcome) -> None:
    """Once per finished checkout: tell the customer when it did not go through."""
    if outcome.state != "completed":
        time.sleep(0.02)
        log.info("checkout cancelled", extra={"order_id": outcome.saga_id,
                                              "cause": outcome.cause,
                                              "failed_step": outcome.failed_step})
