"""The app ``bench/throughput.py`` drains: one async no-op handler on one pool process.

The stream, whether a share of messages fails once, and whether each message publishes a
follow-up come from the environment so that one module serves every run of the benchmark."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_none

from workers import App, CircuitBreaker, Context

STREAM = os.environ.get("BENCH_STREAM", "bench")
FAIL_EVERY = int(os.environ.get("BENCH_FAIL_EVERY", "0"))
"""Every FAIL_EVERY-th message (by its ``n``) fails on its first attempt; 0: none. The retry
waits no time (``wait_none``), so the run measures the cost of the retry machinery (the
atomic move to the delayed set, back to the retry stream, the second delivery), not a
backoff."""
FOLLOW_UP_STREAM = os.environ.get("BENCH_FOLLOW_UP_STREAM") or None
"""If set, every message publishes one follow-up (``{"n": n}``) to this stream with
``ctx.publish``: the consume-transform-produce shape of a saga step."""

TRACING = os.environ.get("BENCH_TRACING", "0") == "1"
"""Trace with OpenTelemetry at 1 % sampling: the SDK's parent-based sampler (a message's
producer made the decision, written in its ``traceparent``; 1 % of new traces otherwise),
each span ended and exported to nothing: the run measures seawall's spans, not an
exporter's (nor the garbage collector sweeping spans kept in memory)."""


def _tracer_provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(0.01))
    provider.add_span_processor(SimpleSpanProcessor(Discard()))
    return provider


SIGNING_KEY = os.environ.get("BENCH_SIGNING_KEY") or None
"""With a key, every message must be signed with it (``App(signing_keys=)``): each one's
HMAC is checked before it is decoded."""

app = App("bench", tracing=_tracer_provider() if TRACING else None,
          signing_keys={"k1": SIGNING_KEY} if SIGNING_KEY else None)
app.pool("bench", concurrency=int(os.environ.get("BENCH_CONCURRENCY", "200")), processes=1)


class Order(BaseModel):
    n: int
    order_id: str
    amount_cents: int


class Flaky(Exception):
    """Fails once; the retry succeeds."""


BREAKER = CircuitBreaker() if os.environ.get("BENCH_BREAKER", "1") == "1" else None
IDEMPOTENT = os.environ.get("BENCH_IDEMPOTENT", "0") == "1"
"""``idempotent=True``: every message's completion is recorded (and looked up) in Redis."""


@app.handler(STREAM, pool="bench", name="bench.noop", stop=stop_after_attempt(3),
             wait=wait_none(), breaker=BREAKER, idempotent=IDEMPOTENT)
async def noop(order: Order, ctx: Context) -> None:
    if FAIL_EVERY and order.n % FAIL_EVERY == 0 and ctx.attempt == 1:
        raise Flaky(f"order {order.order_id} fails once")
    if FOLLOW_UP_STREAM is not None:
        await ctx.publish(FOLLOW_UP_STREAM, {"n": order.n})
