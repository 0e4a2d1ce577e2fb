"""taskiq with taskiq-redis's ``RedisStreamBroker`` (a consumer group on one stream), run by
``taskiq worker --workers W --max-async-tasks C --max-prefetch P``; the stream is read
``xread_count`` entries at a time (BENCH_XREAD_COUNT, taskiq-redis's default 100).

``consumer_id="0"``: the broker's default ``$`` creates the group at the stream's end, which
would skip the messages enqueued before the worker starts. taskiq validates the argument
against the ``Order`` annotation with pydantic, as seawall does."""

from __future__ import annotations

import asyncio
import sys

from taskiq_redis import RedisStreamBroker

from bench.peer_apps import GROUP, REDIS_URL, RUN, Order, chunks, queue_name, setting

STREAM = queue_name(RUN, "taskiq")
broker = RedisStreamBroker(REDIS_URL, queue_name=STREAM, consumer_group_name=GROUP,
                           consumer_id="0", xread_count=setting("xread_count", 100))


@broker.task(task_name="noop")
async def noop(order: Order) -> None:
    pass


async def enqueue() -> None:
    """``kiq`` is one XADD per message; run a batch of them concurrently."""
    await broker.startup()
    try:
        for batch in chunks():
            await asyncio.gather(*(noop.kiq(p) for p in batch))  # type: ignore[arg-type]
    finally:
        await broker.shutdown()


if __name__ == "__main__" and sys.argv[1] == "enqueue":
    asyncio.run(enqueue())
