"""A small shop: a checkout saga charges the card, reserves the stock and ships, each step
in its own bulkhead; when a step fails for good (a declined card, an item out of stock, a
checkout past its deadline) the committed steps are undone, last first. Emails go out from
a pool of their own.

::

    start(order) ─▶ charge ──payments──▶ reserve ──reservations──▶ ship ──shipments──▶ email.confirm
                   (payments)           (inventory)               (shipping)           (email)
    undone, last first:
                    refund ◀──────────── release ◀──────────── a step failed for good
    every finished checkout ──▶ checkout.on_outcome (email)

Run it with ``seawall demo``, or ``seawall run examples.shop.app:app`` beside
``python -m examples.shop.producer``.
"""
