"""The app ``bench/cluster_throughput.py`` drains on a Redis Cluster: one pool per master,
each with one async no-op handler (the model and handler of ``bench_app``) on a stream whose
slot that master serves. The streams come from ``BENCH_STREAMS`` (comma separated); pool
``m<i>`` reads the i-th."""

from __future__ import annotations

import os

from pydantic import BaseModel

from workers import App, CircuitBreaker

STREAMS = [s for s in os.environ.get("BENCH_STREAMS", "bench-0").split(",") if s]

app = App("bench-cluster")


class Order(BaseModel):
    n: int
    order_id: str
    amount_cents: int


def _register(i: int, stream: str) -> None:
    pool = f"m{i}"
    app.pool(pool, concurrency=int(os.environ.get("BENCH_CONCURRENCY", "200")), processes=1)

    @app.handler(stream, pool=pool, name=f"bench.noop{i}", breaker=CircuitBreaker())
    async def noop(order: Order) -> None:
        return None


for _i, _stream in enumerate(STREAMS):
    _register(_i, _stream)
