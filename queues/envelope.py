"""The message envelope: the fields of one stream entry.

Only ``payload`` (JSON) is required, so any client in any language can produce. seawall's
producer also writes ``id`` (stable across retries and replays), ``type``, ``published_at``
(ms), ``attempt``, ``correlation_id``, ``causation_id`` and ``traceparent``; sagas add
``saga``, ``saga_id`` and ``step``. Redeliveries add ``first_failed_at`` (ms) and
``origin_entry_id``; replays add ``replayed_from``. Unknown fields are kept and passed on.
An app with signing keys adds ``sig`` (``queues.signing``: what it
covers); a dead letter of an entry over the payload limit has ``payload_size`` instead of
``payload`` (``workers.integrity``).

Entries are read as bytes and decoded field by field, so one entry with invalid UTF-8 is
one bad message (dead-lettered with the reason), not a broken batch.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

PAYLOAD = b"payload"
ID = b"id"
TYPE = b"type"
ATTEMPT = b"attempt"
CORRELATION_ID = b"correlation_id"
FIRST_FAILED_AT = b"first_failed_at"
ORIGIN_ENTRY_ID = b"origin_entry_id"

UNCHECKED = -1
"""``Envelope.verdict`` of an entry whose signature was not checked with its batch."""


class EnvelopeError(ValueError):
    """An entry that cannot be a message (no ``payload``); it goes to the dead letters."""


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


@dataclass(slots=True)
class Envelope:
    """One entry read from a stream, decoded lazily: the hot path touches only what it needs."""

    source: str
    """The stream key the entry was read from (the user's stream or a retry stream)."""
    entry_id: str
    fields: dict[bytes, bytes]
    as_read: bool = True
    """The fields are the entry's as stored in its stream (False once changed: an
    oversized payload dropped), so a script may copy them from there rather than be sent
    them (``queues.dead_letters.copy_letter``)."""
    verdict: int = UNCHECKED
    """A signing app's verdict on the entry (``queues.signing``: 0 signed), made for its
    whole batch when it was read; :data:`UNCHECKED` for an entry read otherwise (taken
    over from a dead consumer), which the handler's check then makes alone."""

    @property
    def payload(self) -> bytes:
        try:
            return self.fields[PAYLOAD]
        except KeyError:
            raise EnvelopeError("entry has no 'payload' field") from None

    @property
    def message_id(self) -> str:
        raw = self.fields.get(ID)
        return raw.decode("utf-8", "replace") if raw else self.origin_entry_id

    @property
    def origin_entry_id(self) -> str:
        """The entry id on the user's stream, which retries and replays keep."""
        raw = self.fields.get(ORIGIN_ENTRY_ID)
        return raw.decode("ascii", "replace") if raw else self.entry_id

    @property
    def attempt(self) -> int:
        raw = self.fields.get(ATTEMPT)
        if not raw:
            return 1
        try:
            return max(1, int(raw))
        except ValueError:
            return 1

    @property
    def correlation_id(self) -> str:
        return _text(self.fields.get(CORRELATION_ID)) or self.message_id

    @property
    def type(self) -> str | None:
        return _text(self.fields.get(TYPE))

    @property
    def first_failed_at_ms(self) -> int | None:
        raw = self.fields.get(FIRST_FAILED_AT)
        try:
            return int(raw) if raw else None
        except ValueError:
            return None

    @property
    def headers(self) -> dict[str, str]:
        """Every field except the payload, decoded as text."""
        return {
            k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
            for k, v in self.fields.items()
            if k != PAYLOAD
        }


def new_message_id() -> str:
    return uuid.uuid4().hex


_FOLLOW_UP = uuid.UUID("6f1d2c64-5a0e-4b8e-9d3c-2f7a1e0b9c41")
"""Namespace of follow-up message ids (``uuid5``): any fixed value, never to change, or
follow-ups published before and after the change would no longer match."""


def follow_up_id(cause_id: str, publisher: str, stream: str, index: int) -> str:
    """The id of the ``index``-th message that ``publisher`` (a handler, or its fallback)
    sends to ``stream`` while handling message ``cause_id``.

    The same on every attempt: a handler retried after it had already published sends the
    event again under the same id, so an idempotent handler downstream runs it once.
    """
    return uuid.uuid5(_FOLLOW_UP, f"{cause_id}\x1f{publisher}\x1f{stream}\x1f{index}").hex


def dump_payload(payload: BaseModel | Mapping[str, Any] | str | bytes) -> str | bytes:
    """JSON text of a payload: a pydantic model, a mapping, or JSON already serialised."""
    if isinstance(payload, BaseModel):
        return payload.model_dump_json()
    if isinstance(payload, str | bytes):
        return payload
    if isinstance(payload, Mapping):
        return json.dumps(payload, separators=(",", ":"), default=str)
    raise TypeError(
        f"cannot publish a {type(payload).__name__}: pass a pydantic model, a dict, or JSON text"
    )


def encode(
    payload: BaseModel | Mapping[str, Any] | str | bytes,
    *,
    type: str | None = None,
    message_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, str | bytes]:
    """The fields seawall's producer writes for one message."""
    mid = message_id or new_message_id()
    fields: dict[str, str | bytes] = {}
    if headers:
        fields.update(headers)
    fields["payload"] = dump_payload(payload)
    fields["id"] = mid
    if type is None and isinstance(payload, BaseModel):
        type = payload.__class__.__name__
    if type:
        fields["type"] = type
    fields["published_at"] = str(int(time.time() * 1000))
    fields["attempt"] = "1"
    fields["correlation_id"] = correlation_id or mid
    if causation_id:
        fields["causation_id"] = causation_id
    return fields
