"""streaq: an async no-op task on a ``Worker(concurrency=C, prefetch=P)`` (BENCH_CONCURRENCY,
BENCH_PREFETCH; streaq's defaults: 16, and ``prefetch`` = ``concurrency``).

``ttl=0`` stores no result, as seawall stores none. streaq's CLI sets its logger to INFO,
a line per task; this module's ``worker`` command runs the same ``run_sync`` at WARNING
instead (as seawall runs), keeping failures visible, which ``silent=True`` would hide.
streaq reads its stream through a consumer group and XDELs each entry with its XACK, so
the stream's length reaching zero with nothing pending means done."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from streaq import Worker

from bench.peer_apps import REDIS_URL, RUN, Order, chunks, queue_name, setting

worker = Worker(redis_url=REDIS_URL, queue_name=queue_name(RUN, "streaq"),
                concurrency=setting("concurrency", 16),
                prefetch=setting("prefetch", 0) or None)


@worker.task(ttl=0, max_tries=1)
async def noop(order: dict[str, Any]) -> None:
    Order.model_validate(order)


async def enqueue() -> None:
    """``enqueue_many`` pipelines a batch."""
    async with worker:
        for batch in chunks():
            await worker.enqueue_many([noop.enqueue(p) for p in batch])


if __name__ == "__main__":
    if sys.argv[1] == "enqueue":
        asyncio.run(enqueue())
    else:
        logging.basicConfig(level=logging.WARNING)
        worker.run_sync()
