"""A small shop: an order is charged, its stock reserved, and it is shipped, each step in
its own bulkhead, while a confirmation email goes out from a pool of its own.

::

    orders ──billing.charge──▶ payments ──inventory.reserve──▶ reservations
           │                                                        │
           └──email.confirm                         shipping.ship──▶ shipments

Run it with ``seawall demo``, or ``seawall run examples.shop.app:app`` beside
``python -m examples.shop.producer``.
"""
