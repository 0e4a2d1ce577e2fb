"""Tracing without Redis: when it is on, where its layer sits in a handler's stack (outermost:
the user's middleware and the handler, sync ones in their thread too, run inside the process
span), when the unsampled fast path may be taken, and what happens without OpenTelemetry."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
)
from opentelemetry.trace import StatusCode
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_none

from queues.envelope import Envelope
from workers.app import TRACING_ENV, App
from workers.context import Context
from workers.errors import ConfigError
from workers.handler import build_spec
from workers.middleware import Call, Next
from workers.outcome import Outcome
from workers.runtime.stack import build_stack
from workers.runtime.tracing import ProcessSpans, Tracing, unsampled

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


class Order(BaseModel):
    n: int


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


def provider_of(sampler: Sampler | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def call_of(traceparent: str | None = None) -> Call:
    fields = {b"payload": b'{"n":1}', b"id": b"m1"}
    if traceparent is not None:
        fields[b"traceparent"] = traceparent.encode()
    return Call("billing.charge", "default", "orders", Envelope("orders", "1-0", fields),
                time.monotonic())


def test_the_sampled_flag_is_read_without_parsing() -> None:
    assert unsampled(f"00-{TRACE_ID}-{SPAN_ID}-00".encode())
    assert unsampled(f"00-{TRACE_ID}-{SPAN_ID}-02".encode())  # random bit, not sampled
    assert not unsampled(f"00-{TRACE_ID}-{SPAN_ID}-01".encode())
    assert not unsampled(f"00-{TRACE_ID}-{SPAN_ID}-03".encode())
    assert not unsampled(b"garbage")
    assert not unsampled(f"00_{TRACE_ID}_{SPAN_ID}_00".encode())


@pytest.mark.parametrize(("sampler", "skips"), [
    (None, True),                                              # the SDK's default
    (ParentBasedTraceIdRatio(0.01), True),
    (ALWAYS_ON, False),                                        # samples whatever the parent
    (ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON), False),
], ids=["default", "parent-based ratio", "always on", "parent-based, unsampled on"])
def test_the_fast_path_only_where_the_sampler_drops_children_of_unsampled_parents(
        sampler: Sampler | None, skips: bool) -> None:
    provider, _ = provider_of(sampler)
    assert Tracing(provider).follows_unsampled_parents() is skips


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_the_process_span_is_outermost_and_current_in_middleware_and_handler(
        executor: ThreadPoolExecutor, sync: bool) -> None:
    provider, exporter = provider_of()
    seen: dict[str, int] = {}

    async def middleware(call: Call, call_next: Next) -> Outcome:
        seen["middleware"] = trace.get_current_span().get_span_context().span_id
        return await call_next(call)

    def look(order: Order, ctx: Context) -> None:
        seen["handler"] = trace.get_current_span().get_span_context().span_id

    async def look_async(order: Order, ctx: Context) -> None:
        look(order, ctx)

    # Given a traced handler stack with a user middleware,
    spec = build_spec(look if sync else look_async, "orders",
                      {"name": "billing.charge", "breaker": None,
                       "stop": stop_after_attempt(2), "wait": wait_none()})
    stack = build_stack(spec, executor=executor, timeout=None, app_middleware=[middleware],
                        gate=None, diverted=set(), done_at_fetch={},
                        look_up_done=_no_look_up, tracing=Tracing(provider))
    # when a sampled message runs down it,
    outcome = await stack(call_of(f"00-{TRACE_ID}-{SPAN_ID}-01"))
    # then the tracing layer is the outermost, and the middleware and the handler ran
    # inside its process span, a child of the producer's.
    assert isinstance(stack, ProcessSpans)
    assert outcome.kind.value == "ok"
    [span] = exporter.get_finished_spans()
    assert seen == {"middleware": span.context.span_id, "handler": span.context.span_id}
    assert span.parent is not None and f"{span.parent.span_id:016x}" == SPAN_ID
    assert f"{span.context.trace_id:032x}" == TRACE_ID


async def test_without_tracing_the_stack_has_no_tracing_layer(
        executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None:
        pass

    spec = build_spec(handle, "orders", {"name": "billing.charge", "breaker": None})
    stack = build_stack(spec, executor=executor, timeout=None, app_middleware=[], gate=None,
                        diverted=set(), done_at_fetch={}, look_up_done=_no_look_up)
    assert not isinstance(stack, ProcessSpans)


async def test_an_unsampled_parent_is_recorded_where_the_sampler_does_not_follow_it(
        executor: ThreadPoolExecutor) -> None:
    # Given a provider that samples everything whatever the parent said,
    provider, exporter = provider_of(ALWAYS_ON)

    async def handle(order: Order) -> None:
        pass

    spec = build_spec(handle, "orders", {"name": "billing.charge", "breaker": None})
    stack = build_stack(spec, executor=executor, timeout=None, app_middleware=[], gate=None,
                        diverted=set(), done_at_fetch={}, look_up_done=_no_look_up,
                        tracing=Tracing(provider))
    # when a message its producer did not sample runs, then it still has its span.
    await stack(call_of(f"00-{TRACE_ID}-{SPAN_ID}-00"))
    assert len(exporter.get_finished_spans()) == 1


def test_a_send_that_fails_ends_its_span_with_the_error() -> None:
    provider, exporter = provider_of()
    fields: dict[str, str | bytes] = {"payload": "{}", "id": "m1"}
    with pytest.raises(ConnectionError), Tracing(provider).send("orders", fields):
        raise ConnectionError("Redis went away")
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "ConnectionError"
    assert str(fields["traceparent"]).startswith(f"00-{span.context.trace_id:032x}-")


# -- turning it on ---------------------------------------------------------------------------


def test_tracing_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRACING_ENV, raising=False)
    assert App("shop").tracing is None
    monkeypatch.setenv(TRACING_ENV, "1")
    assert isinstance(App("shop").tracing, Tracing)
    assert App("shop", tracing=False).tracing is None
    provider, _ = provider_of()
    traced = App("shop", tracing=provider).tracing
    assert traced is not None and traced.provider is provider


def test_without_opentelemetry_asking_for_tracing_fails_naming_the_extra(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # not importable
    with pytest.raises(ConfigError, match=r"seawall\[otel\]"):
        App("shop", tracing=True)
    # while the environment's request is a warning: the app runs without spans.
    monkeypatch.setenv(TRACING_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="seawall.tracing"):
        assert App("shop").tracing is None
    assert "seawall[otel]" in caplog.text


async def _no_look_up(envelope: Any) -> bool:
    raise AssertionError("no look-up expected")
