"""dramatiq with its Redis broker: an async actor (``AsyncIO`` middleware), run by
``dramatiq --processes 1 --threads T``.

An async actor still occupies one worker thread while it runs (the thread waits for the
coroutine on dramatiq's event-loop thread), so concurrency is the thread count. Messages
live in the list ``<ns>:<queue>`` until fetched and in the hash ``<ns>:<queue>.msgs`` until
acked, which is what ``bench/peers.py`` watches."""

from __future__ import annotations

import sys
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.asyncio import AsyncIO

from bench.peer_apps import REDIS_URL, RUN, Order, payloads, queue_name

broker = RedisBroker(url=REDIS_URL, namespace=queue_name(RUN, "dramatiq"))
broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", actor_name="noop", max_retries=0)
async def noop(order: dict[str, Any]) -> None:
    Order.model_validate(order)


def enqueue() -> None:
    """The Redis broker enqueues with one Lua call per message; it has no batch API."""
    for payload in payloads():
        noop.send(payload)


if __name__ == "__main__" and sys.argv[1] == "enqueue":
    enqueue()
