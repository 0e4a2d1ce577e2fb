"""The storefront: starts a checkout saga per order (``OrderPlaced``) at a steady rate.

    python -m examples.shop.producer --rate 20 [--duration 60] [--redis-url URL]

Every 50 ms it starts the checkouts owed since the last tick, each with
``checkout.start_sync(order, saga_id=order.order_id)`` (one script: the saga's ledger and
its first event, once per order id). ``seawall demo`` runs it in a thread; ``compose.yml``
runs it as a service.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
import uuid
from types import FrameType

import redis

from examples.shop.models import Line, OrderPlaced
from sagas import Saga

TICK = 0.05
CATALOGUE = [("tea-earl-grey", 450), ("mug-blue", 1200), ("kettle", 3900), ("biscuits", 250)]


def make_order(rng: random.Random) -> OrderPlaced:
    lines = [Line(sku=sku, quantity=rng.randint(1, 3), price_cents=price)
             for sku, price in rng.sample(CATALOGUE, rng.randint(1, 3))]
    return OrderPlaced(order_id=f"ord_{uuid.uuid4().hex[:12]}",
                       customer_email=f"customer{rng.randrange(1000)}@example.com", lines=lines)


class Producer:
    """Starts checkouts at ``rate`` per second until told to stop."""

    def __init__(self, checkout: Saga, rate: float, *, seed: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be a positive number of orders per second")
        self.checkout = checkout
        self.rate = rate
        self.started = 0
        self.errors = 0
        self._rng = random.Random(seed)

    def run(self, stop: threading.Event, duration: float | None = None) -> int:
        """Start checkouts until ``stop`` is set or ``duration`` seconds passed; returns the
        count. While Redis is unreachable it waits and carries on, as a storefront would."""
        start = time.monotonic()
        pending: OrderPlaced | None = None
        while not stop.is_set():
            elapsed = time.monotonic() - start
            if duration is not None and elapsed >= duration:
                break
            owed = int(elapsed * self.rate) + 1 - self.started
            try:
                for _ in range(owed):
                    order = pending or make_order(self._rng)
                    pending = order  # started again after an error: once per order id
                    self.checkout.start_sync(order, saga_id=order.order_id)
                    pending = None
                    self.started += 1
            except (redis.RedisError, OSError) as exc:
                self.errors += 1
                print(f"producer: cannot start a checkout ({exc}); retrying", file=sys.stderr)
                stop.wait(1.0)
                continue
            stop.wait(TICK)
        return self.started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.shop.producer",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = forever")
    parser.add_argument("--redis-url", default=None, help="default: $SEAWALL_REDIS_URL")
    args = parser.parse_args(argv)
    if args.redis_url:
        os.environ["SEAWALL_REDIS_URL"] = args.redis_url  # the App reads it
    from examples.shop.app import app, checkout

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    producer = Producer(checkout, args.rate)
    producer.run(stop, args.duration or None)
    print(f"started {producer.started} checkouts")
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
