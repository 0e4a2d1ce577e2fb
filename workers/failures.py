"""What happens to a message whose handler raised.

Until retries and dead letters are wired in, a failed message is logged with its entry id
and left pending: nothing is acked on failure, so it is delivered again once it idles past
``claim_after``.
"""

from __future__ import annotations

import logging

from queues.envelope import Envelope
from workers.consumer import HandlerConsumer

log = logging.getLogger("seawall.failures")


async def on_failure(
    consumer: HandlerConsumer, envelope: Envelope, error: BaseException, duration: float
) -> None:
    log.error(
        "handler failed; entry left pending",
        extra={
            "handler": consumer.spec.name,
            "stream": envelope.source,
            "entry_id": envelope.entry_id,
            "message_id": envelope.message_id,
            "attempt": envelope.attempt,
            "error_type": type(error).__name__,
            "error": str(error)[:500],
        },
    )


async def on_poison(consumer: HandlerConsumer, envelope: Envelope, deliveries: int) -> None:
    log.error(
        "entry delivered too often without completing; left pending",
        extra={"handler": consumer.spec.name, "entry_id": envelope.entry_id,
               "deliveries": deliveries},
    )
