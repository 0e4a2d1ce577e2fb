"""The app ``bench/scale.py`` drains: SCALE_HANDLERS async no-op handlers on one pool
process, each on a stream of its own (``<SCALE_PREFIX>-<i>``, handler ``scale.h<i>``), or,
with ``SCALE_SHARED=1``, all on the one stream ``<SCALE_PREFIX>-0``, each in its own
consumer group (every entry is handled once by each handler).

SCALE_MODE picks the path every message takes: ``ok`` (validated, acked), ``fail_once``
(every message fails its first attempt and is retried at once, ``wait_none``),
``idempotent`` (``idempotent=True``: each completion recorded and looked up in Redis) and
``followup`` (each message publishes one follow-up to ``<stream>-out``). The dead-letter
path needs no mode: its messages fail validation."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_none

from workers import App, Context

PREFIX = os.environ.get("SCALE_PREFIX", "scale")
HANDLERS = int(os.environ.get("SCALE_HANDLERS", "1"))
MODE = os.environ.get("SCALE_MODE", "ok")
SHARED = os.environ.get("SCALE_SHARED", "0") == "1"
if MODE not in {"ok", "fail_once", "idempotent", "followup"}:
    raise SystemExit(f"SCALE_MODE: unknown mode {MODE!r}")

app = App("scale")
app.pool("scale", concurrency=int(os.environ.get("SCALE_CONCURRENCY", "200")), processes=1)


class Order(BaseModel):
    n: int
    order_id: str
    amount_cents: int


class FailsOnce(Exception):
    """Every message's first attempt; the retry succeeds."""


def stream_of(i: int) -> str:
    return f"{PREFIX}-{0 if SHARED else i}"


def _handler(i: int) -> Callable[[Order, Context], Awaitable[None]]:
    out = f"{PREFIX}-{i}-out"

    async def handle(order: Order, ctx: Context) -> None:
        if MODE == "fail_once" and ctx.attempt == 1:
            raise FailsOnce(f"order {order.order_id} fails once")
        if MODE == "followup":
            await ctx.publish(out, {"n": order.n})

    handle.__name__ = handle.__qualname__ = f"h{i}"
    return handle


for _i in range(HANDLERS):
    app.handler(stream_of(_i), pool="scale", name=f"scale.h{_i}", stop=stop_after_attempt(3),
                wait=wait_none(), breaker=None, idempotent=MODE == "idempotent")(_handler(_i))
