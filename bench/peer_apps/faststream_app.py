"""FastStream with its Redis broker: a stream subscriber in a consumer group, reading
``max_records`` entries per XREADGROUP (BENCH_MAX_RECORDS), handled by ``max_workers``
concurrent tasks (BENCH_MAX_WORKERS; FastStream's default is 1); run by
``faststream run --workers W``.

``last_id="0"``: with a group, FastStream otherwise creates it at ``$`` and skips the
messages enqueued before the worker starts. The ``Order`` annotation makes FastStream
validate each message with pydantic, as seawall does."""

from __future__ import annotations

import asyncio
import os
import sys

from faststream import FastStream
from faststream.redis import RedisBroker, StreamSub

from bench.peer_apps import GROUP, REDIS_URL, RUN, Order, chunks, queue_name, setting

STREAM = queue_name(RUN, "faststream")
broker = RedisBroker(REDIS_URL)
app = FastStream(broker)


@broker.subscriber(stream=StreamSub(STREAM, group=GROUP, consumer=f"c{os.getpid()}",
                                    max_records=setting("max_records", 100), last_id="0"),
                   max_workers=setting("max_workers", 1))
async def noop(order: Order) -> None:
    pass


async def enqueue() -> None:
    """``publish`` into a Redis pipeline, one EXEC per batch."""
    client = await broker.connect()
    try:
        for batch in chunks():
            async with client.pipeline(transaction=False) as pipe:
                for payload in batch:
                    await broker.publish(payload, stream=STREAM, pipeline=pipe)
                await pipe.execute()
    finally:
        await broker.stop()


if __name__ == "__main__" and sys.argv[1] == "enqueue":
    asyncio.run(enqueue())
