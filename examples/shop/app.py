"""The shop's app: four pools (bulkheads) and the handlers of the order flow.

Why four pools: a payment provider that hangs must not stop stock being reserved, parcels
being shipped or emails being sent. Each pool is its own OS process with its own
concurrency and timeouts, so a slow step starves only itself.

Run it with ``seawall run examples.shop.app:app`` (every pool) or ``--pool payments``
(one pool per deployment, as ``compose.yml`` does).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid

from tenacity import retry_if_not_exception_type, stop_after_attempt, wait_exponential_jitter

from examples.shop import provider
from examples.shop.models import OrderPlaced, OrderShipped, PaymentCaptured, StockReserved
from workers import App, CircuitBreaker, Context

log = logging.getLogger("seawall.examples.shop")

app = App("shop")
app.pool("payments", concurrency=8, timeout=15.0)
"""A third-party API: few calls at once, so a slow provider cannot pile up work."""
app.pool("inventory", concurrency=16)
app.pool("shipping", concurrency=16)
app.pool("email", concurrency=4, timeout=10.0)
"""A sync handler: it runs in this pool's own four threads, away from the event loops."""


@app.handler(
    "orders",
    name="billing.charge",
    pool="payments",
    timeout=10.0,
    # A provider outage is retried with backoff; a declined card never is.
    stop=stop_after_attempt(4),
    wait=wait_exponential_jitter(initial=0.5, max=5.0),
    retry=retry_if_not_exception_type(provider.CardDeclined),
    # Declines are business as usual: they must not open the breaker.
    breaker=CircuitBreaker(window=20, min_calls=10, failure_rate=0.5, open_for=10.0,
                           exclude=(provider.CardDeclined,)),
)
async def charge(order: OrderPlaced, ctx: Context) -> None:
    """Charge the order's total, then announce the payment."""
    payment_id = await provider.charge(order.order_id, order.total_cents)
    await ctx.publish("payments", PaymentCaptured(
        order_id=order.order_id, payment_id=payment_id, amount_cents=order.total_cents,
        lines=order.lines))


@app.handler("payments", name="inventory.reserve", pool="inventory", idempotent=True)
async def reserve(payment: PaymentCaptured, ctx: Context) -> None:
    """Set the paid order's stock aside. ``idempotent=True``: a redelivered payment (the
    process died after reserving, before the ack) is skipped, not reserved twice."""
    await asyncio.sleep(0.005)
    await ctx.publish("reservations", StockReserved(
        order_id=payment.order_id, reservation_id=f"res_{uuid.uuid4().hex[:12]}",
        lines=payment.lines))


@app.handler("reservations", name="shipping.ship", pool="shipping")
async def ship(reservation: StockReserved, ctx: Context) -> None:
    """Book a courier for the reserved order."""
    await asyncio.sleep(random.uniform(0.02, 0.08))
    await ctx.publish("shipments", OrderShipped(
        order_id=reservation.order_id, tracking_number=f"TRK{random.randrange(10**9):09d}"))


@app.handler("orders", name="email.confirm", pool="email")
def confirm(order: OrderPlaced) -> None:
    """Send the order confirmation. A plain ``def``: blocking code (an SMTP client) is fine
    here, because it runs in the email pool's threads, never on an event loop."""
    time.sleep(0.02)
    log.debug("confirmation sent", extra={"order_id": order.order_id,
                                          "to": order.customer_email})
