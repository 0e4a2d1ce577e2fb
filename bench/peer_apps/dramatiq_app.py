"""dramatiq with its Redis broker: an async actor (``AsyncIO`` middleware) or, with
``BENCH_ACTOR=sync``, a plain one, run by ``dramatiq --processes P --threads T`` with
``dramatiq_queue_prefetch`` set (messages fetched ahead per worker process; dramatiq's
default is two per thread).

An async actor still occupies one worker thread while it runs (the thread waits for the
coroutine on dramatiq's event-loop thread), so concurrency is the thread count; a sync
actor saves that hand-off. Messages
live in the list ``<ns>:<queue>`` until fetched and in the hash ``<ns>:<queue>.msgs`` until
acked, which is what ``bench/peers.py`` watches."""

from __future__ import annotations

import os
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


@dramatiq.actor(queue_name="bench", actor_name="noop_sync", max_retries=0)
def noop_sync(order: dict[str, Any]) -> None:
    Order.model_validate(order)


def enqueue() -> None:
    """The Redis broker enqueues with one Lua call per message; it has no batch API."""
    actor = noop_sync if os.environ.get("BENCH_ACTOR") == "sync" else noop
    for payload in payloads():
        actor.send(payload)


if __name__ == "__main__" and sys.argv[1] == "enqueue":
    enqueue()
