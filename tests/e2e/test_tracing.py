"""Traces end to end: a message published by one app and handled by another gives a
``send`` producer span and a ``process`` consumer span in one trace, with the messaging
attributes; a retry gives a process span per attempt; a dead letter is an event of its
span; a follow-up continues the trace; an unsampled message makes no span and hands its
``traceparent`` on.

Each app sends its spans to a tracer provider of the test's own (an in-memory exporter),
never the process's global provider, which can be set only once. A pool runs in this
process against the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_none

from e2e.failure_helpers import Lab, PoolRun
from queues.envelope import encode
from workers.app import App
from workers.context import Context
from workers.errors import NonRetryable
from workers.runtime.tracing import Tracing

pytestmark = pytest.mark.slow


class Order(BaseModel):
    n: int


class Spans:
    """A tracer provider of the test's own and what it exported."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]


@pytest.fixture
def producer_spans() -> Iterator[Spans]:
    spans = Spans()
    yield spans
    spans.provider.shutdown()


@pytest.fixture
def consumer_spans(lab: Lab) -> Iterator[Spans]:
    """The lab app's spans: it traces into a provider of its own."""
    spans = Spans()
    lab.app.tracing = Tracing(spans.provider)
    yield spans
    spans.provider.shutdown()


@pytest.fixture
async def producer(lab: Lab, producer_spans: Spans) -> App:
    """Another app (another service) that only publishes, tracing into its own provider."""
    app = App(f"producer{lab.uid}", redis_url=lab.redis_url, tracing=producer_spans.provider)
    yield app
    await app.aclose()


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 4}


def _attributes(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_message_from_one_app_handled_by_another_is_one_trace(
        lab: Lab, producer: App, producer_spans: Spans, consumer_spans: Spans,
        aredis: aioredis.Redis) -> None:
    stream, name = lab.stream("orders"), lab.name("charge")
    handled: list[str] = []

    # Given a handler in one app (the lab's), traced,
    @lab.app.handler(stream, name=name, breaker=None)
    async def charge(order: Order, ctx: Context) -> None:
        handled.append(ctx.message_id)

    # when another app, traced on its own, publishes a message,
    mid = await producer.apublish(stream, Order(n=1), correlation_id="checkout-7")
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: consumer_spans.named(f"process {stream}"), within=10,
                         what="the process span")

    # then the producer made a send span, whose context is the message's traceparent,
    [send] = producer_spans.all()
    assert send.name == f"send {stream}"
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is None
    assert _attributes(send) == {
        "messaging.system": "redis", "messaging.operation.type": "send",
        "messaging.operation.name": "send", "messaging.destination.name": stream,
        "messaging.message.id": mid, "messaging.message.conversation_id": "checkout-7"}
    [(_, fields)] = await aredis.xrange(stream)
    assert fields[b"traceparent"].decode() == (
        f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-"
        f"{send.context.trace_flags:02x}")
    # and the consumer one process span in the same trace, child of the send span and
    # linked to it, with the messaging attributes.
    [process] = consumer_spans.all()
    assert handled == [mid]
    assert process.name == f"process {stream}"
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert _parent_id(process) == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert _attributes(process) == {
        "messaging.system": "redis", "messaging.operation.type": "process",
        "messaging.operation.name": "process", "messaging.destination.name": stream,
        "messaging.consumer.group.name": name, "messaging.message.id": mid,
        "messaging.message.conversation_id": "checkout-7", "seawall.attempt": 1,
        "seawall.pool": "default", "seawall.outcome": "ok"}
    assert process.status.status_code is StatusCode.UNSET


async def test_a_retried_message_has_a_process_span_per_attempt(
        lab: Lab, producer: App, producer_spans: Spans, consumer_spans: Spans) -> None:
    stream, name = lab.stream("orders"), lab.name("flaky")
    done: list[int] = []

    # Given a handler that fails on its first attempt and succeeds on the second,
    @lab.app.handler(stream, name=name, stop=stop_after_attempt(3), wait=wait_none(),
                     breaker=None)
    async def flaky(order: Order, ctx: Context) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("payment service down")
        done.append(ctx.attempt)

    # when one message is published (publish_many: one send span per message),
    [mid] = producer.publish_many(stream, [Order(n=1)])
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: len(consumer_spans.all()) == 2, within=10,
                         what="two process spans")

    # then both attempts have a process span, children of the one send span:
    [send] = producer_spans.all()
    first, second = sorted(consumer_spans.all(), key=lambda s: s.start_time or 0)
    assert done == [2]
    for span, attempt in ((first, 1), (second, 2)):
        assert span.name == f"process {stream}"
        assert span.context.trace_id == send.context.trace_id
        assert _parent_id(span) == send.context.span_id
        assert _attributes(span)["seawall.attempt"] == attempt
        assert _attributes(span)["messaging.message.id"] == mid
    # the first failed (status error, its error type, the outcome retry, the exception
    # recorded), the second did not.
    assert first.status.status_code is StatusCode.ERROR
    assert _attributes(first)["error.type"] == "ConnectionError"
    assert _attributes(first)["seawall.outcome"] == "retry"
    assert [e.name for e in first.events] == ["exception"]
    assert second.status.status_code is StatusCode.UNSET
    assert _attributes(second)["seawall.outcome"] == "ok"
    assert "error.type" not in _attributes(second)


async def test_a_dead_letter_is_an_event_of_its_process_span(
        lab: Lab, producer: App, consumer_spans: Spans) -> None:
    stream, name = lab.stream("orders"), lab.name("refuse")

    # Given a handler that refuses every message for good,
    @lab.app.handler(stream, name=name, breaker=None)
    async def refuse(order: Order) -> None:
        raise NonRetryable("card declined")

    # when a message is published,
    producer.publish(stream, Order(n=1))
    async with PoolRun(lab.app) as pool:
        await pool.until(consumer_spans.all, within=10, what="the process span")
        await pool.until(lambda: lab.app.async_client.xlen(lab.keys(name).dlq), within=5,
                         what="the dead letter")

    # then its process span failed with the outcome dead_letter and an event naming the
    # dead-letter stream.
    [process] = consumer_spans.all()
    assert process.status.status_code is StatusCode.ERROR
    assert _attributes(process)["seawall.outcome"] == "dead_letter"
    assert _attributes(process)["error.type"] == "NonRetryable"
    [event] = [e for e in process.events if e.name == "seawall.dead_letter"]
    attributes = dict(event.attributes or {})
    assert attributes["seawall.dead_letter.stream"] == lab.keys(name).dlq
    assert attributes["error.type"] == "NonRetryable"
    assert "NonRetryable" in str(attributes["seawall.reason"])


async def test_a_follow_up_continues_the_trace(
        lab: Lab, producer: App, producer_spans: Spans, consumer_spans: Spans,
        aredis: aioredis.Redis) -> None:
    orders, payments = lab.stream("orders"), lab.stream("payments")
    got: list[str] = []

    # Given a handler that publishes a follow-up to a stream another handler reads,
    @lab.app.handler(orders, name=lab.name("charge"), breaker=None)
    async def charge(order: Order, ctx: Context) -> None:
        await ctx.publish(payments, order)

    @lab.app.handler(payments, name=lab.name("ship"), breaker=None)
    async def ship(order: Order, ctx: Context) -> None:
        got.append(ctx.message_id)

    # when a message is published,
    await producer.apublish(orders, Order(n=1))
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: consumer_spans.named(f"process {payments}"), within=10,
                         what="the downstream process span")

    # then send -> process -> send (the follow-up) -> process is one chain of one trace.
    [send] = producer_spans.all()
    [process] = consumer_spans.named(f"process {orders}")
    [follow_up] = consumer_spans.named(f"send {payments}")
    [downstream] = consumer_spans.named(f"process {payments}")
    assert {s.context.trace_id for s in (send, process, follow_up, downstream)} == {
        send.context.trace_id}
    assert _parent_id(process) == send.context.span_id
    assert _parent_id(follow_up) == process.context.span_id
    assert _parent_id(downstream) == follow_up.context.span_id
    assert follow_up.kind is SpanKind.PRODUCER
    assert _attributes(follow_up)["messaging.message.id"] == got[0]
    assert _attributes(downstream)["messaging.message.conversation_id"] == (
        _attributes(process)["messaging.message.conversation_id"])
    [(_, fields)] = await aredis.xrange(payments)
    assert fields[b"traceparent"].decode() == (
        f"00-{follow_up.context.trace_id:032x}-{follow_up.context.span_id:016x}-"
        f"{follow_up.context.trace_flags:02x}")


async def test_an_unsampled_message_makes_no_span_and_hands_its_traceparent_on(
        lab: Lab, consumer_spans: Spans, aredis: aioredis.Redis) -> None:
    orders, payments = lab.stream("orders"), lab.stream("payments")
    got: list[str] = []

    # Given a traced handler that publishes a follow-up (the provider's sampler is the
    # SDK's default: it follows the parent's decision),
    @lab.app.handler(orders, name=lab.name("charge"), breaker=None)
    async def charge(order: Order, ctx: Context) -> None:
        await ctx.publish(payments, order)

    @lab.app.handler(payments, name=lab.name("ship"), breaker=None)
    async def ship(order: Order, ctx: Context) -> None:
        got.append(ctx.headers["traceparent"])

    # when a producer that did not sample its trace publishes a message,
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"
    await aredis.xadd(orders, encode(Order(n=1), headers={"traceparent": traceparent}))
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: got, within=10, what="the follow-up handled")

    # then neither handler made a span, and the follow-up carried the same traceparent on.
    assert got == [traceparent]
    assert consumer_spans.all() == []


async def test_a_message_without_traceparent_starts_a_trace(
        lab: Lab, consumer_spans: Spans, aredis: aioredis.Redis) -> None:
    stream = lab.stream("orders")

    # Given a traced handler,
    @lab.app.handler(stream, name=lab.name("charge"), breaker=None)
    async def charge(order: Order) -> None:
        pass

    # when a producer that knows nothing of tracing writes a message (payload only),
    await aredis.xadd(stream, {"payload": '{"n": 1}'})
    async with PoolRun(lab.app) as pool:
        await pool.until(consumer_spans.all, within=10, what="the process span")

    # then its process span is the root of a trace of its own, with no link.
    [process] = consumer_spans.all()
    assert process.parent is None
    assert list(process.links) == []
    assert _attributes(process)["seawall.outcome"] == "ok"
