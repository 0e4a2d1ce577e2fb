"""The verdict on a message that failed: retry at T, or dead-letter, as an :class:`Outcome`.

Pure: the retry policy (:func:`workers.retry.decide`, tenacity's strategies) decides, given
the attempt, the first failure's time and ``now``. The settlement turns the outcome into
the atomic script that moves the message (``workers.runtime.settle``).
"""

from __future__ import annotations

from queues.envelope import Envelope
from workers.errors import StepAborted
from workers.outcome import Outcome
from workers.retry import GiveUp, RetryPolicy, decide, gives_up_at_once


class PoisonMessage(Exception):
    """An entry delivered ``max_deliveries`` times that never completed: it most likely
    crashes the process that runs it."""


def failure_outcome(policy: RetryPolicy, envelope: Envelope, error: BaseException,
                    now: float) -> Outcome:
    """Retry (when) or dead letter (why) for ``envelope``, whose latest attempt raised
    ``error`` at ``now`` (wall-clock seconds)."""
    at_once = gives_up_at_once(error)
    if at_once is not None:  # (needs no attempt number: a flood of invalid ones stays cheap)
        if isinstance(error, StepAborted):  # a saga step's decision: its saga compensates
            return Outcome.aborted(error, str(error)[:200] or at_once.reason)
        return Outcome.dead_letter(error, at_once.reason)
    first_ms = envelope.first_failed_at_ms
    first = first_ms / 1000 if first_ms is not None else now
    decision = decide(policy, attempt=envelope.attempt, first_failed_at=first, now=now,
                      error=error)
    if isinstance(decision, GiveUp):
        return Outcome.dead_letter(error, decision.reason)
    return Outcome.retry(error, int(now * 1000) + int(decision.delay * 1000))


def poison_outcome(deliveries: int, max_deliveries: int) -> Outcome:
    """The dead letter of an entry delivered too often without ever completing."""
    error = PoisonMessage(
        f"delivered {deliveries} times without completing (max_deliveries="
        f"{max_deliveries}); it probably crashes its process")
    return Outcome.dead_letter(error, "max deliveries exceeded")
