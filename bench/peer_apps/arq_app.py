"""arq: an async no-op job; one worker with ``max_jobs`` from the setting (BENCH_MAX_JOBS).

``poll_delay`` is lowered from arq's default 0.5 s to 0.01 s: arq reads at most
``queue_read_limit`` job ids per poll (arq's default: ``max(5 * max_jobs, 100)``) and then
sleeps ``poll_delay``, so the default caps a worker at ``queue_read_limit / 0.5 s`` whatever
the hardware. ``keep_result=0`` (no result key), as seawall stores none. arq's fetch leaves
no trace in Redis before the job ends, so the handler's first call marks the start
(``mark_started``)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Function, func, run_worker

from bench.peer_apps import REDIS_URL, RUN, Order, chunks, mark_started, queue_name, setting

QUEUE = queue_name(RUN, "arq")


async def noop(ctx: dict[str, Any], order: dict[str, Any]) -> None:
    mark_started()
    Order.model_validate(order)


class WorkerSettings:
    functions: ClassVar[list[Function]] = [func(noop, name="noop", keep_result=0)]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    queue_name = QUEUE
    max_jobs = setting("max_jobs", 10)
    keep_result = 0
    poll_delay = 0.01


async def enqueue() -> None:
    """``enqueue_job`` is one MULTI/EXEC per job; run a batch of them concurrently."""
    pool = await create_pool(RedisSettings.from_dsn(REDIS_URL), default_queue_name=QUEUE)
    try:
        for batch in chunks():
            await asyncio.gather(*(pool.enqueue_job("noop", p, _job_id=f"{RUN}-{p['n']}")
                                   for p in batch))
    finally:
        await pool.aclose()


if __name__ == "__main__":
    if sys.argv[1] == "enqueue":
        asyncio.run(enqueue())
    else:
        # arq's CLI logs every job at INFO; seawall runs at WARNING.
        logging.basicConfig(level=logging.WARNING)
        run_worker(WorkerSettings)  # type: ignore[arg-type]
