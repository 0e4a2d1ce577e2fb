"""What happens to a message whose handler raised, or that keeps crashing its process.

The retry policy decides (:func:`workers.retry.decide`, pure); this module turns the
decision into one atomic script, sent with the pool's next ack pipeline:

* retry: XACK + ZADD to the handler's delayed set with ``attempt + 1`` (``queues.delayed``);
  the handler's consumers later move it to the handler's own retry stream;
* give up: XACK + XADD to the handler's dead-letter stream, with the error, the traceback
  and the attempts (``queues.dead_letters``).

Either way the message is in exactly one place; if the pipeline never reaches Redis the
entry stays pending and is delivered again.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from typing import Any

from queues.dead_letters import dead_letter, dead_letter_fields
from queues.delayed import retry_fields, schedule_retry
from queues.envelope import Envelope
from workers.runtime.consumer import HandlerConsumer
from workers.retry import GiveUp, decide

log = logging.getLogger("seawall.failures")
HOST = socket.gethostname()


class PoisonMessage(Exception):
    """An entry delivered ``max_deliveries`` times that never completed: it most likely
    crashes the process that runs it."""


def _describe(consumer: HandlerConsumer, envelope: Envelope) -> dict[str, Any]:
    return {"handler": consumer.spec.name, "stream": envelope.source,
            "entry_id": envelope.entry_id, "message_id": envelope.message_id,
            "attempt": envelope.attempt}


def _dead_letter(consumer: HandlerConsumer, envelope: Envelope, error: BaseException,
                 reason: str, now_ms: int) -> None:
    keys = consumer.spec.keys
    first = envelope.first_failed_at_ms
    fields = dead_letter_fields(
        envelope.fields, handler=consumer.spec.name, stream=consumer.spec.stream,
        origin_entry_id=envelope.origin_entry_id, attempts=envelope.attempt,
        error_type=type(error).__name__, error=str(error),
        traceback="".join(traceback.format_exception(error)),
        first_failed_at_ms=first if first is not None else now_ms, failed_at_ms=now_ms,
        consumer=consumer.consumer, host=HOST, reason=reason,
    )
    source = envelope.source

    async def op(pipe: Any) -> None:
        await dead_letter(pipe, source_stream=source, group=consumer.group,
                          entry_id=envelope.entry_id, dlq_key=keys.dlq, fields=fields,
                          drop_source=source == keys.retry)

    consumer.acker.add_op(op)
    log.error("message dead-lettered", extra={
        **_describe(consumer, envelope), "reason": reason, "error_type": type(error).__name__,
        "error": str(error)[:500]})


async def on_failure(
    consumer: HandlerConsumer, envelope: Envelope, error: BaseException, duration: float
) -> None:
    """Schedule a durable retry or dead-letter the message, as its policy says."""
    now = time.time()
    first_ms = envelope.first_failed_at_ms
    first = first_ms / 1000 if first_ms is not None else now
    decision = decide(consumer.spec.retry_policy, attempt=envelope.attempt,
                      first_failed_at=first, now=now, error=error)
    now_ms = int(now * 1000)
    if isinstance(decision, GiveUp):
        _dead_letter(consumer, envelope, error, decision.reason, now_ms)
        return
    keys = consumer.spec.keys
    due_ms = now_ms + int(decision.delay * 1000)
    fields = retry_fields(envelope.fields, attempt=envelope.attempt + 1,
                          first_failed_at_ms=first_ms if first_ms is not None else now_ms,
                          origin_entry_id=envelope.origin_entry_id)
    source = envelope.source

    async def op(pipe: Any) -> None:
        await schedule_retry(pipe, source_stream=source, group=consumer.group,
                             entry_id=envelope.entry_id, delayed_key=keys.delayed,
                             due_ms=due_ms, fields=fields, drop_source=source == keys.retry)

    consumer.acker.add_op(op, on_sent=lambda: consumer.retry_due(due_ms))
    log.info("handler failed; retry scheduled", extra={
        **_describe(consumer, envelope), "error_type": type(error).__name__,
        "error": str(error)[:500], "retry_in": round(decision.delay, 3)})


async def on_poison(consumer: HandlerConsumer, envelope: Envelope, deliveries: int) -> None:
    """Dead-letter an entry that was delivered too often without ever completing."""
    if not envelope.fields:
        # Trimmed from the stream: nothing left to run or keep; just drop it from the PEL.
        consumer.acker.ack(envelope.source, consumer.group, envelope.entry_id)
        return
    error = PoisonMessage(
        f"delivered {deliveries} times without completing (max_deliveries="
        f"{consumer.max_deliveries}); it probably crashes its process")
    _dead_letter(consumer, envelope, error, "max deliveries exceeded",
                 int(time.time() * 1000))
