"""What a handler may ask about the message it is handling, and how it publishes the
events that follow from it.

``ctx.publish`` does not send anything: it stages the event on the message's call, and the
event becomes visible when the message's ack is committed, in the same Redis script as the
XACK. A handler that fails, times out or dies before its ack has published nothing anyone
can see (see :mod:`workers.runtime.settle`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

from pydantic import BaseModel

from queues.envelope import Envelope, encode, follow_up_id
from queues.keys import check_stream_name
from workers.errors import StepAborted
from workers.outcome import FollowUp

_log = logging.getLogger("seawall.handler")


class FollowUpSink(Protocol):
    """Where a context puts what its handler publishes: the message's call, which hands
    the follow-ups (and a saga step's memo) to the ack that commits them."""

    def stage(self, follow_up: FollowUp) -> None: ...

    def remember(self, memo: bytes) -> None: ...


Seal = Callable[[str, MutableMapping[str, str | bytes]], None]
"""``seal(stream, fields)``: raise if the message may not be sent, sign it if the app signs."""


class SagaStep:
    """``ctx.saga`` in a saga's step or compensation: which saga, which step, and the two
    things a step may say besides its events."""

    __slots__ = ("_sink", "id", "name", "step")

    def __init__(self, sink: FollowUpSink, name: str, saga_id: str, step: str) -> None:
        self._sink = sink
        self.name = name
        """The saga's name (``checkout``)."""
        self.id = saga_id
        self.step = step

    @property
    def key(self) -> str:
        """``<saga id>:<step>``: the same on every attempt and redelivery, for the
        idempotency keys of the services the step calls."""
        return f"{self.id}:{self.step}"

    def abort(self, reason: str) -> StepAborted:
        """``raise ctx.saga.abort("card declined")``: no retries; the saga compensates."""
        return StepAborted(reason)

    def remember(self, memo: BaseModel | Mapping[str, Any]) -> None:
        """What this step's compensation will receive (committed with the step's ack);
        without it, the compensation receives the event the step handled."""
        text = memo.model_dump_json() if isinstance(memo, BaseModel) else json.dumps(
            dict(memo), separators=(",", ":"), default=str)
        self._sink.remember(text.encode())

    def __repr__(self) -> str:
        return f"SagaStep({self.name!r}, id={self.id!r}, step={self.step!r})"


class Context:
    """The typed context a handler receives if it declares a second parameter.

    Built per message, so it is cheap: headers and the bound logger are made on first use.
    """

    __slots__ = ("_envelope", "_logger", "_publisher", "_seal", "_sent", "_sink", "handler",
                 "stream")

    def __init__(self, sink: FollowUpSink, handler: str, stream: str, envelope: Envelope, *,
                 fallback: bool = False, seal: Seal | None = None) -> None:
        self._sink = sink
        self._seal = seal
        """The app's size check and signature of what it publishes
        (``workers.integrity.Integrity.seal``)."""
        self._envelope = envelope
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self.handler = handler
        self.stream = stream
        """The user's stream the message was published to (also for retries and replays)."""
        self._publisher = f"{handler}:fallback" if fallback else handler
        self._sent: dict[str, int] | None = None
        """Follow-ups published so far in this call, per stream (for their ids); made at the
        first publish."""

    @property
    def message_id(self) -> str:
        """Stable id of the message: the same for every retry and replay of it."""
        return self._envelope.message_id

    @property
    def entry_id(self) -> str:
        """Id of the stream entry being handled (a retry has a new entry on the retry stream)."""
        return self._envelope.entry_id

    @property
    def origin_entry_id(self) -> str:
        """Id of the entry on the user's stream this message first arrived as."""
        return self._envelope.origin_entry_id

    @property
    def attempt(self) -> int:
        """1 on the first delivery, 2 on the first retry, and so on."""
        return self._envelope.attempt

    @property
    def correlation_id(self) -> str:
        return self._envelope.correlation_id

    @property
    def headers(self) -> dict[str, str]:
        """Every envelope field but the payload, including unknown ones."""
        return self._envelope.headers

    @property
    def saga(self) -> SagaStep:
        """The saga this message belongs to (``ctx.saga.key``, ``abort``, ``remember``);
        ValueError outside a saga."""
        fields = self._envelope.fields
        name, saga_id = fields.get(b"saga"), fields.get(b"saga_id")
        if not name or not saga_id:
            raise ValueError(f"{self.handler}: this message is not part of a saga "
                             "(no saga / saga_id fields)")
        step = fields.get(b"step", b"")
        return SagaStep(self._sink, name.decode(), saga_id.decode(), step.decode())

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the handler, message, entry and correlation ids."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                _log,
                {
                    "handler": self.handler,
                    "stream": self.stream,
                    "message_id": self.message_id,
                    "entry_id": self.entry_id,
                    "correlation_id": self.correlation_id,
                    "attempt": self.attempt,
                },
            )
        return self._logger

    async def publish(
        self,
        stream: str,
        payload: BaseModel | Mapping[str, Any] | str,
        *,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish a follow-up message that carries this one's correlation id and trace
        context (``traceparent``) and names this message as its cause; returns its id. It
        becomes visible on ``stream`` when this message's ack is committed, and never if the
        handler fails.

        The id is the same on every attempt of this message (the n-th follow-up to a stream
        gets the n-th id), so a follow-up relayed twice after a crash is a duplicate that an
        idempotent handler downstream (``idempotent=True``) skips. A handler whose
        follow-ups differ from one attempt to the next passes its own ``message_id``.
        """
        return self.publish_sync(stream, payload, type=type, headers=headers,
                                 message_id=message_id)

    def publish_sync(
        self,
        stream: str,
        payload: BaseModel | Mapping[str, Any] | str,
        *,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> str:
        """:meth:`publish` for a plain ``def`` handler (it runs in its pool's threads, where
        there is nothing to await): the same staging, ids, correlation and causation."""
        check_stream_name(stream)
        fields = encode(payload, type=type, headers=headers,
                        message_id=self._follow_up_id(stream, message_id),
                        correlation_id=self.correlation_id, causation_id=self.message_id)
        cause = self._envelope.fields
        if b"traceparent" in cause and "traceparent" not in fields:
            # the trace goes on (a traced handler's layer gives it a send span of its own)
            fields["traceparent"] = cause[b"traceparent"]
            if b"tracestate" in cause:
                fields["tracestate"] = cause[b"tracestate"]
        if self._seal is not None:
            self._seal(stream, fields)  # too large: the handler fails, nothing is staged
        self._sink.stage(FollowUp(stream, fields))
        return str(fields["id"])

    def _follow_up_id(self, stream: str, message_id: str | None) -> str:
        if message_id is not None:
            return message_id
        if self._sent is None:
            self._sent = {}
        index = self._sent.get(stream, 0)
        self._sent[stream] = index + 1
        return follow_up_id(self.message_id, self._publisher, stream, index)

    def __repr__(self) -> str:
        return (
            f"Context(handler={self.handler!r}, message_id={self.message_id!r}, "
            f"entry_id={self.entry_id!r}, attempt={self.attempt})"
        )
