"""A pretend warehouse: reserving stock takes a few milliseconds, and some orders cannot be
served because an item ran out.

``SHOP_STOCK_SHORTAGE_RATE`` (default 0.05) is the share of orders that find an item out of
stock. Which orders is decided by the order id, so asking again gives the same answer (as a
warehouse would until it is restocked): retrying would not help, the checkout step aborts
its saga instead, and the saga releases what was set aside and refunds the payment.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from examples.shop.models import Line


class OutOfStock(Exception):
    """An item of the order is not there to set aside."""


def _rate(name: str, default: float) -> float:
    try:
        return min(1.0, max(0.0, float(os.environ.get(name, default))))
    except ValueError:
        return default


SHORTAGE_RATE = _rate("SHOP_STOCK_SHORTAGE_RATE", 0.05)


def _short(order_id: str) -> bool:
    digest = hashlib.sha256(order_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < SHORTAGE_RATE


def reservation_id(order_id: str) -> str:
    """One reservation per order: reserving again for the same order finds the same one."""
    return f"res_{hashlib.sha256(b'res:' + order_id.encode()).hexdigest()[:12]}"


async def reserve(order_id: str, lines: list[Line]) -> str:
    """Set the order's items aside; returns the reservation id (idempotent by order)."""
    await asyncio.sleep(0.005)
    if _short(order_id):
        raise OutOfStock(f"{lines[-1].sku} is out of stock")
    return reservation_id(order_id)


async def release(order_id: str) -> None:
    """Put the order's items back on the shelf (idempotent: releasing twice is harmless)."""
    await asyncio.sleep(0.002)
