"""What becomes of one message: an explicit value, made by running the message and turned
into Redis operations in one place (``workers.runtime.settle``).

::

    kind          what the settlement does                       the message
    ok            XACK (+ completion marker, + follow-ups)      done
    skipped       XACK                                           done before (idempotent)
    fallback      XACK (+ the fallback's follow-ups)            degraded: breaker open
    parked        XACK + ZADD delayed, same attempt              waits for the breaker
    retry         XACK + ZADD delayed, attempt + 1               waits for its retry
    dead_letter   XACK + XADD dead-letter stream                 needs a person
    aborted       XACK; its saga compensates (no dead letter)    a saga step gave up

Follow-ups staged by the handler (``ctx.publish``) travel with the outcome and are
committed only by ``ok`` and ``fallback``, in the same script as the XACK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum


class Kind(StrEnum):
    """The seven things that can become of a message (also the ``outcome`` metric label)."""

    OK = "ok"
    SKIPPED = "skipped"
    FALLBACK = "fallback"
    PARKED = "parked"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    ABORTED = "aborted"
    """A saga step stopped its saga (``raise ctx.saga.abort(...)``): a decision, not a
    failure for a person; the saga's completed steps are compensated. Outside a saga step
    the same error is a dead letter."""

    @property
    def acked(self) -> bool:
        """The message is done with: nothing of it waits anywhere in Redis."""
        return self in _DONE

    @property
    def commits_follow_ups(self) -> bool:
        """Its staged follow-ups become visible (committed with the ack)."""
        return self is Kind.OK or self is Kind.FALLBACK


_DONE = frozenset({Kind.OK, Kind.SKIPPED, Kind.FALLBACK})


@dataclass(frozen=True, slots=True)
class FollowUp:
    """One event a handler published through its context, waiting for the ack."""

    stream: str
    fields: Mapping[str, str | bytes]

    @property
    def message_id(self) -> str:
        value = self.fields["id"]
        return value.decode() if isinstance(value, bytes) else value


NO_FOLLOW_UPS: tuple[FollowUp, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What becomes of one message. Build them with the class methods."""

    kind: Kind
    follow_ups: tuple[FollowUp, ...] = NO_FOLLOW_UPS
    error: BaseException | None = None
    """The failure behind a ``retry``, ``dead_letter``, ``aborted`` (or a failed
    fallback's)."""
    reason: str = ""
    """Why: a dead letter's reason, a retry's or a park's cause, in a few words."""
    retry_at_ms: int | None = None
    """Wall-clock ms when a ``retry`` or ``parked`` message comes back."""

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else type(self.error).__name__

    @classmethod
    def ok(cls, follow_ups: tuple[FollowUp, ...] = NO_FOLLOW_UPS) -> Outcome:
        return OK if not follow_ups else cls(Kind.OK, follow_ups)

    @classmethod
    def skipped(cls) -> Outcome:
        return SKIPPED

    @classmethod
    def fallback(cls, follow_ups: tuple[FollowUp, ...] = NO_FOLLOW_UPS) -> Outcome:
        return cls(Kind.FALLBACK, follow_ups, reason="circuit breaker open")

    @classmethod
    def parked(cls, retry_at_ms: int) -> Outcome:
        return cls(Kind.PARKED, reason="circuit breaker open", retry_at_ms=retry_at_ms)

    @classmethod
    def retry(cls, error: BaseException, retry_at_ms: int) -> Outcome:
        return cls(Kind.RETRY, error=error, reason=type(error).__name__,
                   retry_at_ms=retry_at_ms)

    @classmethod
    def dead_letter(cls, error: BaseException, reason: str) -> Outcome:
        return cls(Kind.DEAD_LETTER, error=error, reason=reason)

    @classmethod
    def aborted(cls, error: BaseException, reason: str) -> Outcome:
        return cls(Kind.ABORTED, error=error, reason=reason)

    def as_dead_letter(self) -> Outcome:
        """The same failure as a dead letter: an ``aborted`` outcome where there is no saga
        to stop (a handler outside a saga, a compensation)."""
        return replace(self, kind=Kind.DEAD_LETTER)

    def __repr__(self) -> str:
        extra = f", error={self.error_type}" if self.error is not None else ""
        if self.follow_ups:
            extra += f", follow_ups={len(self.follow_ups)}"
        if self.retry_at_ms is not None:
            extra += f", retry_at_ms={self.retry_at_ms}"
        return f"Outcome({self.kind.value}{extra})"


OK = Outcome(Kind.OK)
SKIPPED = Outcome(Kind.SKIPPED, reason="already completed")
