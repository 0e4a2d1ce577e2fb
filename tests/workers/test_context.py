"""A handler's context (pure: no Redis, nothing sent): what it tells about the message, and
how ``publish``/``publish_sync`` stage follow-ups on the call with ids derived from the
message (the same on every attempt), its correlation id, its trace context and itself as
the cause."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import BaseModel

from queues.envelope import Envelope, follow_up_id
from workers.context import Context
from workers.outcome import FollowUp

HANDLER = "billing.charge"
STREAM = "orders"


class Charged(BaseModel):
    order_id: str
    cents: int


class Sink:
    """Where the context stages what it publishes (the call, in the runtime)."""

    def __init__(self) -> None:
        self.staged: list[FollowUp] = []

    def stage(self, follow_up: FollowUp) -> None:
        self.staged.append(follow_up)


def envelope(entry_id: str = "1700000000000-0", **fields: str) -> Envelope:
    raw = {"payload": '{"order_id":"o1"}', **fields}
    return Envelope(STREAM, entry_id, {k.encode(): v.encode() for k, v in raw.items()})


MESSAGE = {"id": "m1", "attempt": "1", "correlation_id": "corr-9", "x-tenant": "acme"}


def context(sink: Sink, env: Envelope | None = None, *, fallback: bool = False) -> Context:
    return Context(sink, HANDLER, STREAM, env or envelope(**MESSAGE), fallback=fallback)


# -- what the context tells ----------------------------------------------------------------


def test_the_context_tells_about_the_message_from_its_envelope() -> None:
    ctx = context(Sink(), envelope("1700000000005-0", id="m1", attempt="3",
                                   correlation_id="corr-9", origin_entry_id="1700000000000-0",
                                   **{"x-tenant": "acme"}))

    assert (ctx.handler, ctx.stream) == (HANDLER, STREAM)
    assert ctx.message_id == "m1"
    assert ctx.entry_id == "1700000000005-0"
    assert ctx.origin_entry_id == "1700000000000-0"
    assert ctx.attempt == 3
    assert ctx.correlation_id == "corr-9"
    assert ctx.headers == {"id": "m1", "attempt": "3", "correlation_id": "corr-9",
                           "origin_entry_id": "1700000000000-0", "x-tenant": "acme"}


def test_a_bare_entry_from_any_producer_is_identified_by_its_entry_id() -> None:
    ctx = context(Sink(), envelope("1700000000001-0"))

    assert ctx.message_id == ctx.origin_entry_id == ctx.entry_id == "1700000000001-0"
    assert ctx.correlation_id == "1700000000001-0"
    assert ctx.attempt == 1
    assert ctx.headers == {}


def test_the_logger_carries_the_message(caplog: pytest.LogCaptureFixture) -> None:
    ctx = context(Sink())

    with caplog.at_level(logging.INFO, logger="seawall.handler"):
        ctx.logger.info("charging")

    [record] = caplog.records
    assert (record.handler, record.message_id, record.correlation_id,  # type: ignore[attr-defined]
            record.attempt, record.stream) == (  # type: ignore[attr-defined]
        HANDLER, "m1", "corr-9", 1, STREAM)


# -- publishing ----------------------------------------------------------------------------


async def test_publish_stages_a_follow_up_and_sends_nothing() -> None:
    sink = Sink()
    ctx = context(sink)

    message_id = await ctx.publish("payments", Charged(order_id="o1", cents=500),
                                   headers={"x-tenant": "acme"})

    [follow_up] = sink.staged
    assert follow_up.stream == "payments"
    assert message_id == follow_up.message_id == follow_up_id("m1", HANDLER, "payments", 0)
    fields = follow_up.fields
    assert json.loads(fields["payload"]) == {"order_id": "o1", "cents": 500}
    assert fields["type"] == "Charged"
    assert fields["correlation_id"] == "corr-9"  # the conversation goes on
    assert fields["causation_id"] == "m1"  # caused by the message being handled
    assert fields["attempt"] == "1"
    assert fields["x-tenant"] == "acme"


async def test_publish_sync_stages_the_same_follow_up_as_publish() -> None:
    sync_sink, async_sink = Sink(), Sink()

    sync_id = context(sync_sink).publish_sync("payments", {"cents": 500}, type="Charged")
    async_id = await context(async_sink).publish("payments", {"cents": 500}, type="Charged")

    assert sync_id == async_id
    [staged_sync], [staged_async] = sync_sink.staged, async_sink.staged
    ignore = {"published_at"}
    assert ({k: v for k, v in staged_sync.fields.items() if k not in ignore}
            == {k: v for k, v in staged_async.fields.items() if k not in ignore})


def test_the_nth_follow_up_to_a_stream_gets_the_nth_id() -> None:
    sink = Sink()
    ctx = context(sink)

    ids = [ctx.publish_sync("payments", {"n": 0}), ctx.publish_sync("audit", {"n": 0}),
           ctx.publish_sync("payments", {"n": 1}), ctx.publish_sync("payments", {"n": 2})]

    assert ids == [follow_up_id("m1", HANDLER, "payments", 0),
                   follow_up_id("m1", HANDLER, "audit", 0),
                   follow_up_id("m1", HANDLER, "payments", 1),
                   follow_up_id("m1", HANDLER, "payments", 2)]
    assert len(set(ids)) == 4
    assert [(f.stream, f.message_id) for f in sink.staged] == list(
        zip(["payments", "audit", "payments", "payments"], ids, strict=True))


def test_every_attempt_of_a_message_publishes_under_the_same_ids() -> None:
    first, retry = Sink(), Sink()
    retried = envelope("1700000000009-0", id="m1", attempt="2", correlation_id="corr-9",
                       origin_entry_id="1700000000000-0", first_failed_at="1700000000001")

    for sink, env in ((first, envelope(**MESSAGE)), (retry, retried)):
        ctx = context(sink, env)
        ctx.publish_sync("payments", {"n": 0})
        ctx.publish_sync("payments", {"n": 1})

    assert [f.message_id for f in first.staged] == [f.message_id for f in retry.staged]


def test_an_explicit_message_id_is_kept_and_takes_no_place_in_the_count() -> None:
    sink = Sink()
    ctx = context(sink)

    ids = [ctx.publish_sync("payments", {"n": 0}),
           ctx.publish_sync("payments", {"n": 1}, message_id="my-own-id"),
           ctx.publish_sync("payments", {"n": 2})]

    assert ids == [follow_up_id("m1", HANDLER, "payments", 0), "my-own-id",
                   follow_up_id("m1", HANDLER, "payments", 1)]
    assert sink.staged[1].fields["id"] == "my-own-id"
    assert sink.staged[1].fields["correlation_id"] == "corr-9"
    assert sink.staged[1].fields["causation_id"] == "m1"


def test_a_fallback_publishes_under_ids_of_its_own() -> None:
    handler_sink, fallback_sink = Sink(), Sink()

    handler_id = context(handler_sink).publish_sync("payments", {"n": 0})
    fallback_id = context(fallback_sink, fallback=True).publish_sync("payments", {"n": 0})

    assert fallback_id == follow_up_id("m1", f"{HANDLER}:fallback", "payments", 0)
    assert fallback_id != handler_id
    # Otherwise the same: the same conversation, the same cause.
    [staged] = fallback_sink.staged
    assert (staged.fields["correlation_id"], staged.fields["causation_id"]) == ("corr-9", "m1")


def test_a_message_without_a_correlation_id_starts_its_conversation() -> None:
    sink = Sink()

    context(sink, envelope(id="m7")).publish_sync("payments", {"n": 0})

    [staged] = sink.staged
    assert (staged.fields["correlation_id"], staged.fields["causation_id"]) == ("m7", "m7")


def test_headers_do_not_override_the_envelopes_own_fields() -> None:
    sink = Sink()

    context(sink).publish_sync("payments", {"n": 0},
                               headers={"id": "forged", "causation_id": "forged"})

    [staged] = sink.staged
    assert staged.message_id == follow_up_id("m1", HANDLER, "payments", 0)
    assert staged.fields["causation_id"] == "m1"


@pytest.mark.parametrize("stream", ["{payments}", "pay{ments", "payments}"])
def test_a_stream_name_with_braces_is_refused_naming_the_fix(stream: str) -> None:
    sink = Sink()
    ctx = context(sink)

    with pytest.raises(ValueError) as info:
        ctx.publish_sync(stream, {"n": 0})

    message = str(info.value)
    assert repr(stream) in message
    assert "must not contain '{' or '}'" in message
    assert "hash tag" in message
    assert sink.staged == []


async def test_an_async_publish_to_an_invalid_stream_is_refused_too() -> None:
    sink = Sink()

    with pytest.raises(ValueError, match="must not contain"):
        await context(sink).publish("{payments}", {"n": 0})
    with pytest.raises(ValueError, match="must not be empty"):
        await context(sink).publish("", {"n": 0})

    assert sink.staged == []


def test_a_refused_publish_takes_no_place_in_the_count() -> None:
    sink = Sink()
    ctx = context(sink)

    with pytest.raises(ValueError):
        ctx.publish_sync("{payments}", {"n": 0})
    first = ctx.publish_sync("payments", {"n": 0})

    assert first == follow_up_id("m1", HANDLER, "payments", 0)


def test_a_follow_up_carries_its_causes_trace_context_on() -> None:
    sink = Sink()
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"

    context(sink, envelope(**MESSAGE, traceparent=parent, tracestate="k=v")).publish_sync(
        "payments", {"n": 1})
    context(sink).publish_sync("payments", {"n": 2})  # a cause without one: none
    mine = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
    context(sink, envelope(**MESSAGE, traceparent=parent)).publish_sync(
        "payments", {"n": 3}, headers={"traceparent": mine})  # given: kept

    first, second, third = (s.fields for s in sink.staged)
    assert (first["traceparent"], first["tracestate"]) == (parent.encode(), b"k=v")
    assert "traceparent" not in second
    assert third["traceparent"] == mine
