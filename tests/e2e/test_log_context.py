"""Every log line written while a message is handled carries its ids: the runtime's own
lines and the handler's, from an ``async def`` handler and from a plain ``def`` one running
in the pool's threads, as JSON lines."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_none

from e2e.failure_helpers import Lab, PoolRun, Where, where
from workers import logs
from workers.context import Context

pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Order(BaseModel):
    n: int


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 4}


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in ("", "seawall")}
    written = io.StringIO()
    monkeypatch.setattr(sys, "stderr", written)
    logs.configure("INFO", log_format="json")
    try:
        yield written
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_failing_handlers_log_lines_carry_every_id(
        lab: Lab, aredis: aioredis.Redis, json_logs: io.StringIO,
        kind: str) -> None:
    orders, step = lab.stream("orders"), lab.name("step")
    mine = logging.getLogger("shop.billing")
    policy = {"stop": stop_after_attempt(2), "wait": wait_none(), "breaker": None}

    # Given a handler (async, or a plain def in the pool's threads) that logs, then fails
    # on its first attempt,
    if kind == "async":
        @lab.app.handler(orders, name=step, **policy)
        async def charge(order: Order, ctx: Context) -> None:
            mine.warning("charging")
            if ctx.attempt == 1:
                raise ConnectionError("provider down")
    else:
        @lab.app.handler(orders, name=step, **policy)
        def charge_in_a_thread(order: Order, ctx: Context) -> None:
            mine.warning("charging")
            if ctx.attempt == 1:
                raise ConnectionError("provider down")

    # when a message of a saga, with a cause and a trace, goes through,
    mid = await lab.app.apublish(orders, Order(n=1), headers={
        "causation_id": "cause-1", "saga": "checkout", "saga_id": "s-1", "step": "charge",
        "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}, )
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: where(aredis, lab.keys(step)), within=1, what="a view")

        async def done() -> bool:
            return await where(aredis, lab.keys(step)) == Where()

        await pool.until(done, within=10, what="the retry to succeed")

    # then the handler's two lines and the runtime's retry line carry every id.
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()
             if line.startswith("{")]
    about = [line for line in lines if line.get("message_id") == mid]
    expected = {"message_id": mid, "correlation_id": mid, "causation_id": "cause-1",
                "saga": "checkout", "saga_id": "s-1", "step": "charge", "handler": step,
                "pool": "default", "trace_id": TRACE_ID}
    mine_lines = [line for line in about if line["msg"] == "charging"]
    assert [line["attempt"] for line in mine_lines] == [1, 2]
    retry = [line for line in about if line["msg"] == "handler failed; retry scheduled"]
    assert len(retry) == 1
    for line in [*mine_lines, *retry]:
        assert {k: line.get(k) for k in expected} == expected
