"""Celery with its Redis broker: a sync no-op task (Celery has no async tasks), run by
``celery worker --pool solo|threads|prefork --concurrency C``, with
``worker_prefetch_multiplier`` from the setting (BENCH_PREFETCH_MULTIPLIER; Celery's
default 4).

``task_acks_late``: ack after the task ran, as seawall does; it also keeps each fetched
message in the ``unacked`` hash until then, which is what ``bench/peers.py`` watches.
``global_keyprefix`` puts the run id into every key kombu writes (``unacked`` and the
bindings included), so that runs do not share keys."""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery

from bench.peer_apps import REDIS_URL, RUN, Order, chunks, queue_name, setting

PREFIX = queue_name(RUN, "celery") + ":"
QUEUE = "bench"

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    task_acks_late=True,
    task_ignore_result=True,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_prefetch_multiplier=setting("prefetch_multiplier", 4),
)


@app.task(name="noop")
def noop(order: dict[str, Any]) -> None:
    Order.model_validate(order)


def enqueue() -> None:
    """One LPUSH per ``apply_async``, over one producer connection."""
    with app.producer_or_acquire() as producer:
        for batch in chunks():
            for payload in batch:
                noop.apply_async((payload,), producer=producer)


if __name__ == "__main__" and sys.argv[1] == "enqueue":
    enqueue()
