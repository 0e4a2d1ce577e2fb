"""The storefront: publishes ``OrderPlaced`` to ``orders`` at a steady rate.

    python -m examples.shop.producer --rate 20 [--duration 60] [--redis-url URL]

It publishes what is owed every 50 ms in one pipelined round trip (``app.publish_many``),
so a high rate costs few round trips and a low one stays smooth. ``seawall demo`` runs it
in a thread; ``compose.yml`` runs it as a service.
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
from workers import App

TICK = 0.05
CATALOGUE = [("tea-earl-grey", 450), ("mug-blue", 1200), ("kettle", 3900), ("biscuits", 250)]


def make_order(rng: random.Random) -> OrderPlaced:
    lines = [Line(sku=sku, quantity=rng.randint(1, 3), price_cents=price)
             for sku, price in rng.sample(CATALOGUE, rng.randint(1, 3))]
    return OrderPlaced(order_id=f"ord_{uuid.uuid4().hex[:12]}",
                       customer_email=f"customer{rng.randrange(1000)}@example.com", lines=lines)


class Producer:
    """Publishes orders at ``rate`` per second until told to stop."""

    def __init__(self, app: App, rate: float, *, seed: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be a positive number of orders per second")
        self.app = app
        self.rate = rate
        self.published = 0
        self.errors = 0
        self._rng = random.Random(seed)

    def run(self, stop: threading.Event, duration: float | None = None) -> int:
        """Publish until ``stop`` is set or ``duration`` seconds passed; returns the count.
        While Redis is unreachable it waits and carries on, as a storefront would."""
        start = time.monotonic()
        while not stop.is_set():
            elapsed = time.monotonic() - start
            if duration is not None and elapsed >= duration:
                break
            owed = int(elapsed * self.rate) + 1 - self.published
            if owed > 0:
                try:
                    self.app.publish_many("orders", [make_order(self._rng) for _ in range(owed)])
                    self.published += owed
                except (redis.RedisError, OSError) as exc:
                    self.errors += 1
                    print(f"producer: cannot publish ({exc}); retrying", file=sys.stderr)
                    stop.wait(1.0)
                    continue
            stop.wait(TICK)
        return self.published


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.shop.producer",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = forever")
    parser.add_argument("--redis-url", default=None, help="default: $SEAWALL_REDIS_URL")
    args = parser.parse_args(argv)
    if args.redis_url:
        os.environ["SEAWALL_REDIS_URL"] = args.redis_url  # the App reads it
    from examples.shop.app import app

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    producer = Producer(app, args.rate)
    producer.run(stop, args.duration or None)
    print(f"published {producer.published} orders to 'orders'")
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
