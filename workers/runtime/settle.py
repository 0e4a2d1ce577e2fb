"""The one place where an :class:`~workers.outcome.Outcome` becomes Redis operations.

Every operation leaves with the pool's next ack pipeline (``workers.runtime.acker``):

* ``ok``: XACK; with follow-ups or a completion marker (idempotent handlers), one
  ``commit.lua`` call that acks and writes them together;
* ``skipped``: XACK;
* ``fallback``: XACK, committing the fallback's follow-ups like ``ok``;
* ``parked``: XACK + ZADD to the delayed set (``retry_later.lua``), the attempt unchanged:
  the breaker was open, the message was not tried;
* ``retry``: the same, with ``attempt + 1``, due when the policy said;
* ``dead_letter``: XACK + XADD to the dead-letter stream (``dead_letter.lua``);
* ``aborted``: settled by the saga's plugin (its steps compensated); a handler outside a
  saga that raises ``StepAborted`` gets a dead letter.

A handler's plugin (``workers.plugin``, a saga's steps) settles the outcomes it knows first.

Either way the message is in exactly one place once the pipeline lands; if it never does,
the entry stays pending and is delivered again.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from queues.commit import Pending
from queues.dead_letters import (
    Letter,
    Pairs,
    copy_letter,
    dead_letter_fields,
    failure_pairs,
    pack_constant,
    pack_dead_letter,
    pack_letter,
    queue_dead_letters,
)
from queues.delayed import retry_fields, schedule_retry
from queues.envelope import ORIGIN_ENTRY_ID, Envelope
from queues.keys import HandlerKeys
from workers.middleware import Call
from workers.outcome import Kind, Outcome
from workers.plugin import HandlerPlugin
from workers.retry import describe
from workers.runtime.acker import AckBatcher

log = logging.getLogger("seawall.settle")
HOST = socket.gethostname()

FULL_LINES = 5
"""Failures of one (handler, error type, what happened) logged in full before they are
only counted."""
SUMMARY_EVERY = 10.0
"""Seconds between the summary lines of a failure that keeps happening."""
FAILURES_KEPT = 256
"""Distinct failures (error type, text, where raised, reason) whose packed part of a
dead letter one handler keeps, made once and sent for every message that fails alike."""


class FailureLog:
    """Logs failures so that a flood writes tens of lines, not a million: the first
    :data:`FULL_LINES` of each (error type, message) in full, then one line per
    :data:`SUMMARY_EVERY` seconds saying how many more there were."""

    __slots__ = ("_handler", "_seen")

    def __init__(self, handler: str) -> None:
        self._handler = handler
        self._seen: dict[tuple[str, str], list[float]] = {}
        """(message, error type) -> [count logged in full, suppressed since, last summary]"""

    def log(self, level: int, message: str, outcome: Outcome,
            extra: dict[str, Any] | Callable[[], dict[str, Any]],
            now: float | None = None) -> None:
        """``extra``: the line's fields, or a function making them (only called for a line
        that is logged in full)."""
        key = (message, outcome.error_type or "")
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = [0.0, 0.0, 0.0]
        if seen[0] < FULL_LINES:
            seen[0] += 1
            log.log(level, message, extra=extra() if callable(extra) else extra)
            if seen[0] == FULL_LINES:
                seen[2] = time.monotonic() if now is None else now
            return
        seen[1] += 1
        at = time.monotonic() if now is None else now
        if at - seen[2] >= SUMMARY_EVERY:
            log.log(level, f"{message} (and more like it: counted, not logged)", extra={
                "handler": self._handler, "error_type": outcome.error_type,
                "count": int(seen[1]), "seconds": round(at - seen[2], 1)})
            seen[1] = 0.0
            seen[2] = at


_STACKS: dict[tuple[Any, ...], str] = {}


def _exception_line(error: BaseException, text: str) -> str:
    """What ``traceback.format_exception_only`` prints for a plain exception, from its text
    already made (``str`` of a validation error is not cheap: make it once)."""
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ in ("__main__", "builtins") \
        else f"{kind.__module__}.{kind.__qualname__}"
    return f"{name}: {text}\n" if text else f"{name}\n"


def raised_at(error: BaseException) -> tuple[Any, ...] | None:
    """Where ``error`` was raised from, as a key: its type and each frame's code and line
    (cheap: ``extract_tb`` would read source lines); None for a chained or annotated
    error, whose traceback says more than where it was raised."""
    if (error.__cause__ is not None or error.__context__ is not None
            or getattr(error, "__notes__", None)):
        return None
    key: list[Any] = [type(error)]
    tb = error.__traceback__
    while tb is not None:
        key.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    return tuple(key)


def formatted_traceback(error: BaseException, text: str | None = None) -> str:
    """The error's traceback as text. The stack part is formatted once per distinct place
    it was raised from (a flood of invalid payloads all fail in the same place); only the
    exception's own lines are formatted each time."""
    key = raised_at(error)
    if key is None:
        return "".join(traceback.format_exception(error))  # chained or noted: rare, whole
    stack = _STACKS.get(key)
    if stack is None:
        frames = traceback.extract_tb(error.__traceback__)
        stack = "".join(["Traceback (most recent call last):\n",
                         *traceback.format_list(frames)]) if frames else ""
        if len(_STACKS) < 1000:
            _STACKS[key] = stack
    return stack + _exception_line(error, str(error) if text is None else text)


def error_text(error: BaseException) -> str:
    """What a dead letter says the error was: its ``str``; for a payload's validation
    error, the field errors without their inputs (the payload is in the dead letter), made
    once per shape (``workers.retry.describe``)."""
    if isinstance(error, ValidationError):
        return describe(error).text
    return str(error)


class Settler:
    """Turns one handler's outcomes into operations on the ack pipeline."""

    __slots__ = ("_batches", "_constant", "_consumer", "_failures", "_handler",
                 "_idempotent", "_observed", "_packed_failures", "_plugin", "_retry_due",
                 "_stream", "acker", "group", "keys", "marker_ttl")

    def __init__(self, *, handler: str, stream: str, keys: HandlerKeys, consumer: str,
                 acker: AckBatcher, idempotent: bool, marker_ttl: float,
                 retry_due: Callable[[int], None], plugin: HandlerPlugin | None = None) -> None:
        self._handler = handler
        self._stream = stream
        self.keys = keys
        self.group = keys.group
        self._consumer = consumer
        self.acker = acker
        self._idempotent = idempotent
        self.marker_ttl = max(1, int(marker_ttl))
        self._plugin = plugin
        self._failures = FailureLog(handler)
        self._constant = pack_constant(handler=handler, stream=stream, consumer=consumer,
                                       host=HOST)
        self._retry_due = retry_due
        """Told when a retry or a park is due, so the handler's mover looks by then."""
        self._observed = acker.observed
        self._packed_failures: dict[tuple[Any, ...], tuple[int, bytes, Pairs]] = {}
        """(where raised, text, reason) -> the dead letters' shared part (pack_failure)
        and its number."""
        self._batches: dict[str, tuple[tuple[str, str, str], Any, Any]] = {}
        """Source stream -> its dead letters' batch key, queueing and reply functions."""

    def settle(self, call: Call, outcome: Outcome) -> None:
        """Queue what ``outcome`` means for ``call``'s message; never raises."""
        envelope = call.envelope
        kind = outcome.kind
        settled = None if self._plugin is None else self._plugin.settle(call, outcome, self)
        if settled is not None:
            outcome = settled
        elif kind is Kind.OK or kind is Kind.FALLBACK:
            marker = (self.keys.done(envelope.message_id)
                      if self._idempotent and kind is Kind.OK else None)
            if marker is None and not outcome.follow_ups:
                self.acker.ack(envelope.source, self.group, envelope.entry_id)
            else:
                pending = Pending(envelope.entry_id, marker,
                                  [(f.stream, f.fields) for f in outcome.follow_ups])
                self.acker.commit(envelope.source, self.keys.outbox, self.group, pending,
                                   self.marker_ttl)
        elif kind is Kind.SKIPPED:
            self.acker.ack(envelope.source, self.group, envelope.entry_id)
            log.info("message already completed by this handler; acked without running",
                     extra=self._describe(envelope))
        elif kind is Kind.RETRY or kind is Kind.PARKED:
            self._schedule(envelope, outcome)
        else:
            if kind is Kind.ABORTED:  # (raised outside a saga step: no saga to compensate)
                outcome = outcome.as_dead_letter()
            self._dead_letter(envelope, outcome)
        if self._observed:
            self.acker.settled(call, outcome)

    def drop(self, envelope: Envelope) -> None:
        """Ack an entry with nothing left to run or keep (trimmed from its stream while
        pending)."""
        self.acker.ack(envelope.source, self.group, envelope.entry_id)

    def _describe(self, envelope: Envelope) -> dict[str, Any]:
        return {"handler": self._handler, "stream": envelope.source,
                "entry_id": envelope.entry_id, "message_id": envelope.message_id,
                "attempt": envelope.attempt}

    def _schedule(self, envelope: Envelope, outcome: Outcome) -> None:
        now_ms = int(time.time() * 1000)
        due_ms = outcome.retry_at_ms if outcome.retry_at_ms is not None else now_ms
        retried = outcome.kind is Kind.RETRY
        fields: dict[bytes, bytes]
        if retried:
            first_ms = envelope.first_failed_at_ms
            fields = retry_fields(envelope.fields, attempt=envelope.attempt + 1,
                                  first_failed_at_ms=first_ms if first_ms is not None else now_ms,
                                  origin_entry_id=envelope.origin_entry_id)
        else:
            # Parked, not failed: same attempt, and no failure time invented for it.
            fields = dict(envelope.fields)
            fields[ORIGIN_ENTRY_ID] = envelope.origin_entry_id.encode()
        source, group, keys = envelope.source, self.group, self.keys

        async def op(pipe: Any) -> None:
            await schedule_retry(pipe, source_stream=source, group=group,
                                 entry_id=envelope.entry_id, delayed_key=keys.delayed,
                                 due_ms=due_ms, fields=fields, drop_source=source == keys.retry)

        self.acker.add_op(op, on_sent=lambda: self._retry_due(due_ms))
        if retried:
            self._failures.log(logging.INFO, "handler failed; retry scheduled", outcome, lambda: {
                **self._describe(envelope), "error_type": outcome.error_type,
                "error": str(outcome.error)[:500], "retry_in": round((due_ms - now_ms) / 1000, 3)})

    def dead_letter_fields(self, envelope: Envelope, outcome: Outcome) -> dict[bytes, bytes]:
        """The dead letter of ``envelope``: its fields, the error, traceback and context."""
        now_ms = int(time.time() * 1000)
        error = outcome.error if outcome.error is not None else RuntimeError(outcome.reason)
        first = envelope.first_failed_at_ms
        text = error_text(error)
        return dead_letter_fields(
            envelope.fields, handler=self._handler, stream=self._stream,
            origin_entry_id=envelope.origin_entry_id, attempts=envelope.attempt,
            error_type=type(error).__name__, error=text,
            traceback=formatted_traceback(error, text),
            first_failed_at_ms=first if first is not None else now_ms, failed_at_ms=now_ms,
            consumer=self._consumer, host=HOST, reason=outcome.reason,
        )

    def packed_dead_letter(self, envelope: Envelope, outcome: Outcome) -> bytes:
        """:meth:`dead_letter_fields`, packed for the dead-letter scripts directly."""
        now_ms = int(time.time() * 1000)
        error = outcome.error if outcome.error is not None else RuntimeError(outcome.reason)
        first = envelope.first_failed_at_ms
        text = error_text(error)
        return pack_dead_letter(
            envelope.fields, self._constant, origin_entry_id=envelope.origin_entry_id,
            attempts=envelope.attempt, error_type=type(error).__name__, error=text,
            traceback=formatted_traceback(error, text),
            first_failed_at_ms=first if first is not None else now_ms, failed_at_ms=now_ms,
            reason=outcome.reason)

    def log_dead_letter(self, envelope: Envelope, outcome: Outcome) -> None:
        self._failures.log(logging.ERROR, "message dead-lettered", outcome, lambda: {
            **self._describe(envelope), "reason": outcome.reason,
            "error_type": outcome.error_type, "error": str(outcome.error)[:500]})

    def packed_failure(self, outcome: Outcome) -> tuple[int, bytes, Pairs]:
        """The fields of ``outcome``'s dead letter that every message failing the same way
        shares (handler, host, error, traceback, reason: :func:`~queues.dead_letters.
        failure_pairs`), made once per (where raised, text, reason): a flood of one failure
        formats and packs them once. With their number in a batch and packed as its shared
        part; number 0 and no shared part for fields not kept (a chained error's, or one
        failure too many), which travel inside their letter."""
        error = outcome.error if outcome.error is not None else RuntimeError(outcome.reason)
        text = error_text(error)
        where = raised_at(error)
        key = (where, text, outcome.reason) if where is not None else None
        known = self._packed_failures.get(key) if key is not None else None
        if known is not None:
            return known
        pairs = failure_pairs(self._constant, error_type=type(error).__name__, error=text,
                              traceback=formatted_traceback(error, text),
                              reason=outcome.reason)
        if key is None or len(self._packed_failures) >= FAILURES_KEPT:
            return 0, b"", pairs
        known = self._packed_failures[key] = (len(self._packed_failures) + 1,
                                              pairs.packed(), pairs)
        return known

    def _dead_letter(self, envelope: Envelope, outcome: Outcome) -> None:
        source = envelope.source
        batch = self._batches.get(source)
        if batch is None:
            batch = self._batches[source] = self._batch_of(source)
        failure, shared, pairs = self.packed_failure(outcome)
        if outcome.error is not None:
            # Its traceback is in the dead letter now, as text. The live one would keep
            # the frames it went through (and their locals) until the flush: a few more
            # objects per message for the garbage collector to go over, in a flood.
            outcome.error.__traceback__ = None
        rest = None if failure else pairs
        if envelope.as_read:
            # the script copies the entry's fields from the stream: only metadata is sent
            record = copy_letter(entry_id=envelope.entry_id, failure=failure,
                                 origin_entry_id=envelope.origin_entry_id,
                                 attempts=envelope.attempt,
                                 first_failed_at_ms=envelope.first_failed_at_ms,
                                 failed_at_ms=int(time.time() * 1000), rest=rest)
            self.acker.batch(batch[0], (failure, shared, record, envelope, rest), batch[1],
                             batch[2])
        else:
            self._carry(envelope, failure, shared, rest)
        self.log_dead_letter(envelope, outcome)

    def _carry(self, envelope: Envelope, failure: int, shared: bytes,
               rest: Pairs | None) -> None:
        """Queue ``envelope``'s dead letter with every field in it."""
        record = pack_letter(envelope.fields, entry_id=envelope.entry_id, failure=failure,
                             origin_entry_id=envelope.origin_entry_id,
                             attempts=envelope.attempt,
                             first_failed_at_ms=envelope.first_failed_at_ms,
                             failed_at_ms=int(time.time() * 1000), rest=rest)
        batch = self._batches[envelope.source]
        self.acker.batch(batch[0], (failure, shared, record, None, None), batch[1], batch[2])

    def _batch_of(self, source: str) -> tuple[tuple[str, str, str], Any, Any]:
        """The batch key of dead letters from ``source``, the function that queues a batch
        of them (one ``dead_letter.lua`` call), and the one that reads its reply."""
        group, dlq, drop = self.group, self.keys.dlq, source == self.keys.retry

        def queue(pipe: Any, letters: list[Letter]) -> list[Letter]:
            queue_dead_letters(pipe, source_stream=source, group=group, dlq_key=dlq,
                               letters=letters, drop_source=drop)
            return letters

        def read(letters: list[Letter], reply: Any) -> None:
            # 0: a letter to copy whose entry left the stream while pending (trimmed,
            # deleted); it is still pending, and its fields are still here: send them.
            for (failure, shared, _, envelope, rest), result in zip(letters, reply,
                                                                    strict=False):
                if type(result) is int and envelope is not None:
                    self._carry(envelope, failure, shared, rest)

        return ("dead-letter", source, dlq), queue, read
