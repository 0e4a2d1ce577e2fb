"""The app ``bench/latency.py`` runs: one async handler on one pool process that records, for
every message, how long it took from the producer's send to the handler's call.

The producer writes its send time (``time.time_ns()``) into each entry as the ``sent_ns``
field, which seawall passes on as a header. The handler keeps (sent_ns, latency_ns) pairs
in memory, and writes them to ``BENCH_LATENCY_OUT`` when the message carrying the
``bench_end`` header arrives (the producer's last), as int64 pairs in native byte order."""

from __future__ import annotations

import asyncio
import os
import time
from array import array

from pydantic import BaseModel

from workers import App, Context

STREAM = os.environ.get("BENCH_LATENCY_STREAM", "bench-latency")
OUT = os.environ.get("BENCH_LATENCY_OUT", "")

app = App("bench-latency")
app.pool("latency", concurrency=int(os.environ.get("BENCH_CONCURRENCY", "200")), processes=1)


class Order(BaseModel):
    n: int
    order_id: str
    amount_cents: int


RECORDED = array("q")
"""sent_ns, latency_ns, sent_ns, latency_ns, ..."""


def write_samples(path: str, samples: array[int]) -> None:
    """Write atomically: the benchmark reads the file as soon as it exists."""
    with open(f"{path}.tmp", "wb") as f:
        samples.tofile(f)
    os.replace(f"{path}.tmp", path)


@app.handler(STREAM, pool="latency", name="bench.latency")
async def record(order: Order, ctx: Context) -> None:
    now = time.time_ns()
    headers = ctx.headers
    if "bench_end" in headers:
        # The last message: anything still running has a moment to finish first.
        asyncio.get_running_loop().call_later(0.2, write_samples, OUT, RECORDED)
        return
    sent = int(headers["sent_ns"])
    RECORDED.append(sent)
    RECORDED.append(now - sent)
