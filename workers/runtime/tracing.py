"""OpenTelemetry traces of messages (the ``otel`` extra): a ``send <stream>`` producer span
per message published, whose context travels in the message's ``traceparent`` field (W3C
Trace Context), and a ``process <stream>`` consumer span per attempt, child of that
producer span and linked to it.

Tracing is on for an app given ``App(..., tracing=True)`` (spans go to the global tracer
provider), ``App(..., tracing=provider)`` (to that one), or ``SEAWALL_TRACING=1`` in the
environment. Off, neither this module nor OpenTelemetry is imported, and no handler's stack
holds its layer. OpenTelemetry is imported here only inside functions, so the module
imports without it.

Where the consumer span sits: outermost in the handler's stack (see
:mod:`workers.runtime.stack`), outside the app's and the handler's middleware. So the span
ends with the outcome that is settled (after any middleware changed it), the middleware,
the handler and whatever they trace (an HTTP client's spans, ``app.publish``) run inside it,
plain ``def`` handlers too (their thread runs in a copy of the context), and its time is
the whole run of the message.

The process span, after the messaging semantic conventions::

    name, kind                          process <stream>, CONSUMER
    parent, links                       the producer's span (traceparent), linked as well
    messaging.system                    redis
    messaging.operation.type            process
    messaging.destination.name          the user's stream (also for retries and replays)
    messaging.consumer.group.name       the handler
    messaging.message.id                the message id (the same on every attempt)
    messaging.message.conversation_id   the correlation id
    seawall.attempt, seawall.pool       1 on the first delivery; the handler's pool
    seawall.outcome, seawall.reason     ok, retry, dead_letter, aborted, ...; why, on a failure
    error.type                          the exception's class, on a failure

A ``retry``, ``dead_letter`` or ``aborted`` (a saga step stopped its saga) outcome sets
the status to ERROR (its reason as the description) and records the exception; a dead
letter also adds a ``seawall.dead_letter`` event naming the dead-letter stream. Each
follow-up (``ctx.publish``) gets a ``send <stream>`` producer span, child of the process
span, made when the call returns; its context goes into the follow-up's ``traceparent``,
so the downstream consumer's span lands in the same trace.

Unsampled messages cost next to nothing: when the incoming ``traceparent`` says "not
sampled" and the provider's sampler drops the children of unsampled remote parents (the
SDK's ``ParentBased``, by default), no span is made: the layer reads one field and hands
the call on. Its follow-ups carry that ``traceparent`` on (``ctx.publish`` copies the
cause's, traced or not), so the decision holds downstream and every message of the chain
keeps the trace id its log lines carry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from workers.errors import ConfigError
from workers.middleware import Call, Next
from workers.outcome import FollowUp, Kind, Outcome

if TYPE_CHECKING:
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.trace import Span, TracerProvider

    from workers.handler import HandlerSpec

log = logging.getLogger("seawall.tracing")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
SYSTEM = "redis"

Fields = MutableMapping[str, str | bytes]
"""A message's fields as seawall's producer writes them (``queues.envelope.encode``)."""

_DASH = ord("-")
_UNSAMPLED_LAST_DIGIT = frozenset(b"02468ace")
"""The flags' last hex digit when the sampled bit (0x01) is clear."""


def start(provider: TracerProvider | None = None, *, required: bool) -> Tracing | None:
    """An app's tracing, its spans going to ``provider`` (default: the global provider).

    Without OpenTelemetry installed: :class:`~workers.errors.ConfigError` when the app
    asked for tracing (``required``), else (only the environment asked) a warning, and None.
    """
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        if required:
            raise ConfigError("tracing needs OpenTelemetry: pip install 'seawall[otel]' "
                              "(or opentelemetry-api with the SDK of your choice)") from None
        log.warning("SEAWALL_TRACING is set but OpenTelemetry is not installed: no spans; "
                    "pip install 'seawall[otel]'")
        return None
    return Tracing(provider)


def unsampled(traceparent: bytes) -> bool:
    """``traceparent`` is well formed and its sampled flag is clear (no parsing: three
    dashes in their places and the last hex digit)."""
    return (len(traceparent) == 55 and traceparent[2] == _DASH and traceparent[35] == _DASH
            and traceparent[52] == _DASH and traceparent[54] in _UNSAMPLED_LAST_DIGIT)


def error_type(error: BaseException) -> str:
    """``error.type``: the exception's class name (as OpenTelemetry's instrumentations
    write it)."""
    return type(error).__qualname__


class Tracing:
    """One app's tracing: its tracer, producer spans, and the consumer layer of its
    handlers' stacks."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        """The tracer provider spans go to; None: the global one."""
        self._tracer = trace.get_tracer("seawall", tracer_provider=provider)
        self._trace = trace
        self._context = context
        self._link = trace.Link
        self._producer = trace.SpanKind.PRODUCER
        self._consumer = trace.SpanKind.CONSUMER
        self._propagator = TraceContextTextMapPropagator()

    # -- producing ---------------------------------------------------------------------

    @contextmanager
    def send(self, stream: str, *batch: Fields) -> Iterator[None]:
        """Around writing ``batch`` to ``stream``: a ``send <stream>`` producer span per
        message (child of the current span, if any), its context written into the
        message's ``traceparent`` before the ``with`` block sends it; the spans end when the
        block does (with the error, if it raised)."""
        spans = [self._send_span(stream, fields, None) for fields in batch]
        try:
            yield
        except BaseException as exc:
            for span in spans:
                _failed(span, exc)
            raise
        finally:
            for span in spans:
                span.end()

    def _send_span(self, stream: str, fields: Fields, parent: OtelContext | None) -> Span:
        span = self._tracer.start_span(f"send {stream}", context=parent, kind=self._producer)
        if span.is_recording():
            attributes = {
                "messaging.system": SYSTEM,
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": stream,
            }
            message_id = fields.get("id")
            if message_id:
                attributes["messaging.message.id"] = _text(message_id)
            correlation_id = fields.get("correlation_id")
            if correlation_id:
                attributes["messaging.message.conversation_id"] = _text(correlation_id)
            span.set_attributes(attributes)
        inject(span, fields)
        return span

    # -- consuming ---------------------------------------------------------------------

    def layer(self, inner: Next, spec: HandlerSpec) -> ProcessSpans:
        """The handler stack's outermost layer: a process span around each attempt."""
        return ProcessSpans(inner, self, spec.keys.dlq, self.follows_unsampled_parents())

    def follows_unsampled_parents(self) -> bool:
        """The provider's sampler surely drops a span whose remote parent was not sampled
        (the SDK's ``ParentBased`` with its default for that case), so the consumer layer
        may skip such messages without asking it."""
        try:
            from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler
        except ImportError:
            return False
        provider = self.provider or self._trace.get_tracer_provider()
        sampler = getattr(provider, "sampler", None)
        if not isinstance(sampler, ParentBased):
            return False
        for_unsampled = getattr(sampler, "_remote_parent_not_sampled", None)
        return (isinstance(for_unsampled, StaticSampler)
                and for_unsampled.should_sample(None, 1, "probe").decision is Decision.DROP)

    def parent_of(self, fields: dict[bytes, bytes]) -> OtelContext | None:
        """The context of the producer span named by a message's ``traceparent`` (and
        ``tracestate``), or None when there is none or it is malformed."""
        traceparent = fields.get(b"traceparent")
        if not traceparent:
            return None
        carrier = {TRACEPARENT: traceparent.decode("ascii", "replace")}
        state = fields.get(b"tracestate")
        if state:
            carrier[TRACESTATE] = state.decode("ascii", "replace")
        context = self._propagator.extract(carrier)
        if not self._trace.get_current_span(context).get_span_context().is_valid:
            return None
        return context

    async def process(self, inner: Next, call: Call, dead_letters: str) -> Outcome:
        """Run ``call`` down ``inner`` inside its process span (current while it runs)."""
        parent = self.parent_of(call.envelope.fields)
        links = None
        if parent is not None:
            links = [self._link(self._trace.get_current_span(parent).get_span_context())]
        span = self._tracer.start_span(f"process {call.stream}", context=parent,
                                       kind=self._consumer, links=links)
        if span.is_recording():
            span.set_attributes({
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": call.stream,
                "messaging.consumer.group.name": call.handler,
                "messaging.message.id": call.message_id,
                "messaging.message.conversation_id": call.correlation_id,
                "seawall.attempt": call.attempt,
                "seawall.pool": call.pool,
            })
        here = self._trace.set_span_in_context(span)
        token = self._context.attach(here)
        try:
            try:
                outcome = await inner(call)
            finally:
                self._context.detach(token)
        except BaseException as exc:
            _failed(span, exc)
            span.end()
            raise
        try:
            if span.is_recording():
                _record(span, outcome, dead_letters)
            for follow_up in outcome.follow_ups:
                self._send_span(follow_up.stream, _fields(follow_up), here).end()
        finally:
            span.end()
        return outcome


class ProcessSpans:
    """A process span around each attempt of one handler's messages, but none for a
    message whose producer did not sample it (when the sampler would drop it anyway)."""

    __slots__ = ("_dead_letters", "_inner", "_skip_unsampled", "_tracing")

    def __init__(self, inner: Next, tracing: Tracing, dead_letters: str,
                 skip_unsampled: bool) -> None:
        self._inner = inner
        self._tracing = tracing
        self._dead_letters = dead_letters
        self._skip_unsampled = skip_unsampled

    def __call__(self, call: Call) -> Awaitable[Outcome]:
        traceparent = call.envelope.fields.get(b"traceparent")
        if traceparent is not None and self._skip_unsampled and unsampled(traceparent):
            # no span, no coroutine of its own; its follow-ups carry this traceparent on
            # (``Context.publish`` copies it)
            return self._inner(call)
        return self._tracing.process(self._inner, call, self._dead_letters)


def inject(span: Span, fields: Fields) -> None:
    """Write ``span``'s context into ``fields`` as W3C ``traceparent`` (and ``tracestate``)."""
    context = span.get_span_context()
    if not context.is_valid:
        return
    fields[TRACEPARENT] = (f"00-{context.trace_id:032x}-{context.span_id:016x}-"
                           f"{context.trace_flags:02x}")
    if context.trace_state:
        fields[TRACESTATE] = context.trace_state.to_header()
    else:
        fields.pop(TRACESTATE, None)


def _fields(follow_up: FollowUp) -> Fields:
    fields = follow_up.fields
    if not isinstance(fields, MutableMapping):  # staged by hand, read-only: unchanged
        return {}
    return fields


def _record(span: Span, outcome: Outcome, dead_letters: str) -> None:
    """The outcome on its process span (recording)."""
    from opentelemetry.trace import Status, StatusCode

    kind = outcome.kind
    span.set_attribute("seawall.outcome", kind.value)
    error = outcome.error
    if error is not None:
        span.set_attribute("error.type", error_type(error))
        span.record_exception(error)
    if outcome.reason and kind is not Kind.OK:
        span.set_attribute("seawall.reason", outcome.reason)
    if kind is Kind.RETRY or kind is Kind.DEAD_LETTER or kind is Kind.ABORTED:
        span.set_status(Status(StatusCode.ERROR, outcome.reason))
    if kind is Kind.RETRY and outcome.retry_at_ms is not None:
        span.set_attribute("seawall.retry_at_ms", outcome.retry_at_ms)
    elif kind is Kind.DEAD_LETTER:
        attributes: dict[str, Any] = {"seawall.dead_letter.stream": dead_letters,
                                      "seawall.reason": outcome.reason}
        if error is not None:
            attributes["error.type"] = error_type(error)
        span.add_event("seawall.dead_letter", attributes)


def _failed(span: Span, error: BaseException) -> None:
    """A span around something that raised (a send that failed, or a layer's error that
    the runner turns into the message's failure)."""
    from opentelemetry.trace import Status, StatusCode

    if span.is_recording():
        span.set_attribute("error.type", error_type(error))
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
