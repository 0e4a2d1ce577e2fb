"""A pretend card processor, flaky on purpose, so that retries, the circuit breaker and the
checkout saga's compensations have something to show.

``SHOP_PAYMENT_FAILURE_RATE`` (default 0.02) is the share of calls that fail as if the
provider were down: a transient error, retried later. ``SHOP_PAYMENT_DECLINE_RATE``
(default 0.01) is the share of cards declined: a business outcome, never retried and never
counted by the breaker. Set the failure rate to 0.6 to watch the breaker open. Refunds fail
like charges (the same provider), but are never declined.

``SHOP_PAYMENT_OUTAGE_START`` (a Unix time) and ``SHOP_PAYMENT_OUTAGE_SECONDS`` schedule an
outage: in that span every call fails. ``seawall demo`` sets them (``--outage-at``,
``--outage-for``) so that the breaker opens, the checkouts wait, and it closes again once
the provider is back.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid


class ProviderUnavailable(Exception):
    """The provider timed out or answered 5xx: worth trying again later."""


class CardDeclined(Exception):
    """The bank said no. Retrying will not change its mind."""


def _rate(name: str, default: float) -> float:
    try:
        return min(1.0, max(0.0, float(os.environ.get(name, default))))
    except ValueError:
        return default


def _seconds(name: str) -> float:
    try:
        return max(0.0, float(os.environ.get(name, "0")))
    except ValueError:
        return 0.0


FAILURE_RATE = _rate("SHOP_PAYMENT_FAILURE_RATE", 0.02)
DECLINE_RATE = _rate("SHOP_PAYMENT_DECLINE_RATE", 0.01)
OUTAGE_START = _seconds("SHOP_PAYMENT_OUTAGE_START")
OUTAGE_END = OUTAGE_START + _seconds("SHOP_PAYMENT_OUTAGE_SECONDS")
LATENCY = (0.01, 0.05)
"""Seconds a charge takes, uniformly between the two (an HTTP call, in real life)."""


def down(now: float | None = None) -> bool:
    """True during the scheduled outage."""
    now = time.time() if now is None else now
    return OUTAGE_START <= now < OUTAGE_END


async def charge(order_id: str, amount_cents: int) -> str:
    """Charge a card; returns the payment id. Idempotent at the provider by ``order_id``,
    as real processors are through an idempotency key."""
    await asyncio.sleep(random.uniform(*LATENCY))
    if down():
        raise ProviderUnavailable(f"payment provider is down (outage) charging {order_id}")
    roll = random.random()
    if roll < FAILURE_RATE:
        raise ProviderUnavailable(f"payment provider timed out charging {order_id}")
    if roll < FAILURE_RATE + DECLINE_RATE:
        raise CardDeclined(f"card declined for {order_id} ({amount_cents} cents)")
    return f"pay_{uuid.uuid5(uuid.NAMESPACE_URL, order_id).hex[:16]}"


async def refund(payment_id: str, amount_cents: int) -> None:
    """Give a payment back. Idempotent at the provider by ``payment_id``: refunding twice
    refunds once."""
    await asyncio.sleep(random.uniform(*LATENCY))
    if down():
        raise ProviderUnavailable(f"payment provider is down (outage) refunding {payment_id}")
    if random.random() < FAILURE_RATE:
        raise ProviderUnavailable(f"payment provider timed out refunding {payment_id}")
