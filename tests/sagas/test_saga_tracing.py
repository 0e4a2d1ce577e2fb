"""A traced saga is one trace: the start's ``send`` span is its root, each step's process
span is a child of the event that triggered it, and each compensation (sent by the saga's
scripts) lands in the same trace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from e2e.failure_helpers import Lab, PoolRun
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from saga_helpers import Checkout, Order, checkout_saga, cleanup_saga

from queues import saga_store
from workers.context import Context
from workers.runtime.tracing import Tracing

pytestmark = pytest.mark.slow


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 8}


@pytest.fixture
def exporter(lab: Lab) -> Iterator[InMemorySpanExporter]:
    """The lab app traces into a provider of its own (the global one can be set once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    lab.app.tracing = Tracing(provider)
    yield exporter
    provider.shutdown()


@pytest.fixture
async def checkout(lab: Lab, aredis: aioredis.Redis) -> AsyncIterator[Checkout]:
    world = checkout_saga(lab, aredis)
    yield world
    await cleanup_saga(aredis, world.saga)


def _group(span: ReadableSpan) -> str:
    return str((span.attributes or {}).get("messaging.consumer.group.name", ""))


async def test_a_compensated_saga_is_one_trace_of_every_step_and_compensation(
        lab: Lab, checkout: Checkout, exporter: InMemorySpanExporter) -> None:
    name = checkout.saga.name

    # Given the checkout saga whose last step (ship) aborts,
    def abort(order: Order, ctx: Context) -> None:
        raise ctx.saga.abort("address unknown")

    checkout.fail["ship"] = abort
    # when a traced app starts a saga and its pool runs it to the end,
    await checkout.saga.start(Order(n=1), saga_id="s1")
    async with PoolRun(lab.app) as pool:
        async def compensated() -> bool:
            return (await checkout.states(["s1"]))["s1"] in saga_store.FINAL

        await pool.until(compensated, within=20, interval=0.05, what="the saga final")
        await pool.until(lambda: len([s for s in exporter.get_finished_spans()
                                      if s.kind is SpanKind.CONSUMER]) >= 5, within=10,
                         what="a process span for every step and compensation")
    assert (await checkout.states(["s1"])) == {"s1": "compensated"}

    # then the start, the three steps, their events and both compensations are one trace,
    spans = list(exporter.get_finished_spans())
    assert len({s.context.trace_id for s in spans}) == 1, [
        (s.name, f"{s.context.trace_id:032x}") for s in spans]
    processed = sorted(_group(s) for s in spans if s.kind is SpanKind.CONSUMER)
    assert processed == sorted([f"{name}.charge", f"{name}.reserve", f"{name}.ship",
                                f"{name}.reserve.undo", f"{name}.charge.undo"])
    # whose one root is the start's send span, every other span the child of one in it.
    by_id = {s.context.span_id: s for s in spans}
    [root] = [s for s in spans if s.parent is None]
    assert root.kind is SpanKind.PRODUCER and root.name.startswith("send ")
    assert all(s.parent.span_id in by_id for s in spans if s.parent is not None)
    # The ship step's span says it stopped its saga (an error, no dead letter); the
    # compensations' say they did their work.
    [ship] = [s for s in spans if _group(s) == f"{name}.ship"]
    assert (ship.attributes or {})["seawall.outcome"] == "aborted"
    assert ship.status.status_code is StatusCode.ERROR
    assert not [e for e in ship.events if e.name == "seawall.dead_letter"]
    assert all((s.attributes or {})["seawall.outcome"] == "ok"
               for s in spans if _group(s).endswith(".undo"))
