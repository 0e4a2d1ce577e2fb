"""The app ``bench/throughput.py`` drains: one async no-op handler on one pool process.

The stream, and whether a share of messages fails once, come from the environment so that
one module serves every run of the benchmark."""

from __future__ import annotations

import os

from pydantic import BaseModel

from workers import App, Context

STREAM = os.environ.get("BENCH_STREAM", "bench")
FAIL_EVERY = int(os.environ.get("BENCH_FAIL_EVERY", "0"))
"""Every FAIL_EVERY-th message (by its ``n``) fails on its first attempt; 0: none."""

app = App("bench")
app.pool("bench", concurrency=int(os.environ.get("BENCH_CONCURRENCY", "200")), processes=1)


class Order(BaseModel):
    n: int
    order_id: str
    amount_cents: int


class Flaky(Exception):
    """Fails once; the retry succeeds."""


@app.handler(STREAM, pool="bench", name="bench.noop")
async def noop(order: Order, ctx: Context) -> None:
    if FAIL_EVERY and order.n % FAIL_EVERY == 0 and ctx.attempt == 1:
        raise Flaky(f"order {order.order_id} fails once")
