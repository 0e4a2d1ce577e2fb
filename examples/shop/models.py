"""The shop's events. Each is a pydantic model, so a handler receives a validated object and
a malformed message is dead-lettered at once instead of failing deep inside a handler."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Line(BaseModel):
    sku: str
    quantity: int = Field(gt=0)
    price_cents: int = Field(ge=0)


class OrderPlaced(BaseModel):
    """What the storefront starts a checkout saga with (``examples.shop.producer``)."""

    order_id: str
    customer_email: str
    lines: list[Line] = Field(min_length=1)

    @property
    def total_cents(self) -> int:
        return sum(line.quantity * line.price_cents for line in self.lines)


class PaymentCaptured(BaseModel):
    """Sent on ``payments`` once the card was charged; also what the refund gets (the
    charge step's memo)."""

    order_id: str
    customer_email: str
    payment_id: str
    amount_cents: int
    lines: list[Line]


class StockReserved(BaseModel):
    """Sent on ``reservations`` once every line's stock is set aside."""

    order_id: str
    customer_email: str
    reservation_id: str
    lines: list[Line]


class OrderShipped(BaseModel):
    """Published on ``shipments``, a plain stream outside the saga: the end of the happy
    path (the email pool sends the confirmation)."""

    order_id: str
    customer_email: str
    tracking_number: str
