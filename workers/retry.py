"""Retry policies: what happens to a message whose handler failed. Pure, no I/O, no clock.

Users write a policy with tenacity's own strategy objects, as they would for a function::

    @app.handler("orders", stop=stop_after_attempt(5),
                 wait=wait_exponential_jitter(max=300),
                 retry=retry_if_exception_type(ConnectionError))

seawall never sleeps on a wait: :func:`decide` turns the strategies into a decision, and the
runtime makes "wait" a durable delayed redelivery (``queues.delayed``) and "give up" a dead
letter (``queues.dead_letters``). Because the attempt number and the first failure's time
travel with the message (``attempt``, ``first_failed_at``), the decision survives restarts
and hops between processes, which tenacity's in-memory state could not.

Rules, in order:

1. ``NonRetryable``, a pydantic ``ValidationError`` or an ``EnvelopeError`` (the entry
   cannot be a message) give up at once: trying again cannot help.
2. ``Retry(delay=d)`` (or tenacity's ``TryAgain``) asks for another attempt whatever the
   ``retry`` filter says; the delay is ``d``, or the policy's ``wait`` when ``d`` is None.
3. Otherwise an error the ``retry`` strategy does not accept gives up.
4. If ``stop`` says stop, give up: the attempts (or the time) are exhausted.
5. Otherwise retry in ``wait(...)`` seconds.

Strategies are called in tenacity's own order (retry, wait, stop), so ``stop_before_delay``,
which looks at the upcoming sleep, behaves as it does in tenacity.

Rule 1 alone is :func:`gives_up_at_once`; :func:`describe` says what a validation error
says without its inputs, once per shape of error (a flood of one wrong schema is one
description), for the verdict and for the dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tenacity
from pydantic import ValidationError

from queues.envelope import EnvelopeError
from workers.errors import ConfigError, NonRetryable, Retry

StopStrategy = Callable[[tenacity.RetryCallState], bool]
WaitStrategy = Callable[[tenacity.RetryCallState], float]
RetryStrategy = Callable[[tenacity.RetryCallState], bool]

#: A handler with no policy is tried this many times in all, then dead-lettered.
DEFAULT_ATTEMPTS = 5
#: Longest default wait between attempts, in seconds.
DEFAULT_MAX_WAIT = 60.0


def default_stop() -> StopStrategy:
    return tenacity.stop_after_attempt(DEFAULT_ATTEMPTS)


def default_wait() -> WaitStrategy:
    # ~1s, 2s, 4s, 8s (+ up to 1s of jitter), capped at a minute.
    return tenacity.wait_exponential_jitter(max=DEFAULT_MAX_WAIT)


def default_retry() -> RetryStrategy:
    return tenacity.retry_if_exception_type(Exception)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A handler's retry policy: tenacity's ``stop``, ``wait`` and ``retry`` strategies.

    The defaults: 5 attempts in all, exponential backoff with jitter (1s, 2s, 4s, 8s, plus
    up to 1s of jitter, at most 60s), any ``Exception`` retried; then the dead letters.
    """

    stop: StopStrategy = field(default_factory=default_stop)
    wait: WaitStrategy = field(default_factory=default_wait)
    retry: RetryStrategy = field(default_factory=default_retry)

    def __post_init__(self) -> None:
        for name in ("stop", "wait", "retry"):
            value = getattr(self, name)
            if not callable(value):
                raise ConfigError(
                    f"{name}={value!r} is not a tenacity strategy; pass one such as "
                    f"{_EXAMPLES[name]}"
                )


_EXAMPLES = {
    "stop": "stop=stop_after_attempt(5)",
    "wait": "wait=wait_exponential_jitter(max=60)",
    "retry": "retry=retry_if_exception_type(ConnectionError)",
}


def make_policy(
    stop: Any = None, wait: Any = None, retry: Any = None
) -> RetryPolicy:
    """A policy from a handler's options; each one left as None takes the default.

    Raises ``ConfigError`` (when the app is built) for anything that is not a strategy.
    """
    return RetryPolicy(
        stop=default_stop() if stop is None else stop,
        wait=default_wait() if wait is None else wait,
        retry=default_retry() if retry is None else retry,
    )


@dataclass(frozen=True, slots=True)
class RetryIn:
    """Deliver the message again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Dead-letter the message; ``reason`` is short and goes into the dead letter."""

    reason: str


Decision = RetryIn | GiveUp

_UNDECODABLE = GiveUp("undecodable payload: not valid JSON")
_INVALID = GiveUp("invalid payload: validation failed")
_NOT_AN_ENVELOPE = GiveUp("invalid message: not a seawall envelope")


def call_state(
    policy: RetryPolicy,
    *,
    attempt: int,
    first_failed_at: float,
    now: float,
    error: BaseException,
) -> tenacity.RetryCallState:
    """The ``RetryCallState`` tenacity would hold after attempt ``attempt`` raised ``error``.

    ``start_time`` is the first failure and ``outcome_timestamp`` is ``now`` (both in
    seconds, on any one clock), so ``stop_after_delay(d)`` counts from the first failure.
    """
    retrying = tenacity.Retrying(stop=policy.stop, wait=policy.wait, retry=policy.retry)
    state = tenacity.RetryCallState(retry_object=retrying, fn=None, args=(), kwargs={})
    state.start_time = first_failed_at
    state.attempt_number = max(1, attempt)
    outcome = tenacity.Future(state.attempt_number)
    outcome.set_exception(error)
    state.outcome = outcome
    # Clocks of two hosts may disagree; time since the first failure is never negative.
    state.outcome_timestamp = max(now, first_failed_at)
    return state


def gives_up_at_once(error: BaseException) -> GiveUp | None:
    """Rule 1 alone: the verdict on an error that no policy retries (``NonRetryable``, a
    validation error, an entry that is no envelope), None for any other. Needs no attempt
    number nor clock: the runtime asks it first, so that a flood of invalid messages skips
    the rest of the decision."""
    if isinstance(error, ValidationError):
        return _UNDECODABLE if describe(error).undecodable else _INVALID
    if isinstance(error, NonRetryable):
        return GiveUp(f"non-retryable: {type(error).__name__}")
    if isinstance(error, EnvelopeError):
        return _NOT_AN_ENVELOPE
    return None


def decide(
    policy: RetryPolicy,
    *,
    attempt: int,
    first_failed_at: float,
    now: float,
    error: BaseException,
) -> Decision:
    """Retry or give up, after attempt number ``attempt`` (1 = the first) raised ``error``.

    ``first_failed_at`` and ``now`` are seconds on the same clock (the envelope's
    ``first_failed_at`` is in ms: divide by 1000). On the first failure pass ``now`` for both.
    """
    at_once = gives_up_at_once(error)
    if at_once is not None:
        return at_once

    state = call_state(policy, attempt=attempt, first_failed_at=first_failed_at, now=now,
                       error=error)
    explicit = isinstance(error, Retry | tenacity.TryAgain)
    if not explicit and not policy.retry(state):
        return GiveUp(f"not retried by policy: {type(error).__name__}")

    requested = error.delay if isinstance(error, Retry) else None
    delay = float(requested) if requested is not None else float(policy.wait(state))
    state.upcoming_sleep = max(0.0, delay)
    if policy.stop(state):
        elapsed = state.seconds_since_start or 0.0
        return GiveUp(
            f"attempts exhausted: {state.attempt_number} attempts in {elapsed:.0f}s"
        )
    return RetryIn(state.upcoming_sleep)


# -- what a validation error says, made once per shape ------------------------------------
#
# A flood of invalid messages (a producer deployed with a wrong schema) fails the same way
# thousands of times: the same fields, the same error types, only the inputs differ. The
# inputs are in the dead letter already (its payload, kept byte for byte), so the text a
# dead letter carries leaves them out, in pydantic's own layout::
#
#     1 validation error for Order
#     n
#       Input should be a valid integer, unable to parse string as an integer [type=int_parsing]
#
# Without inputs the text is the same for every message of a shape: it is made once and
# looked up after that (``str()`` of a pydantic error costs more than the rest of a dead
# letter). Both the verdict (:func:`gives_up_at_once`, which tells an undecodable payload
# from an invalid one) and the dead letter ask, one right after the other, about the same
# error object: the last answer is kept for it.

SHAPES_KEPT = 512
"""Distinct shapes remembered (a bound on memory; one more shape is described anew)."""


@dataclass(frozen=True, slots=True)
class Described:
    """One shape of validation error."""

    text: str
    """The error without its inputs, in pydantic's layout."""
    undecodable: bool
    """The payload is not JSON at all (``json_invalid``), as opposed to the wrong JSON."""


_SHAPES: dict[tuple[str, str], Described] = {}
_last: tuple[ValidationError | None, Described | None] = (None, None)


def describe(error: ValidationError) -> Described:
    """``error``'s text without its inputs, and whether the payload was not JSON."""
    global _last
    last_error, last = _last
    if last_error is error and last is not None:
        return last
    key = (error.title, error.json(include_url=False, include_input=False))
    described = _SHAPES.get(key)
    if described is None:
        described = _describe(key[0], json.loads(key[1]))
        if len(_SHAPES) < SHAPES_KEPT:
            _SHAPES[key] = described
    _last = (error, described)
    return described


def _describe(title: str, errors: list[dict[str, object]]) -> Described:
    count = len(errors)
    lines = [f"{count} validation error{'s' if count != 1 else ''} for {title}"]
    for e in errors:
        loc = e.get("loc")
        if isinstance(loc, list) and loc:
            lines.append(".".join(str(part) for part in loc))
        lines.append(f"  {e.get('msg')} [type={e.get('type')}]")
    return Described("\n".join(lines),
                     any(e.get("type") == "json_invalid" for e in errors))


__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_MAX_WAIT",
    "Decision",
    "Described",
    "GiveUp",
    "RetryIn",
    "RetryPolicy",
    "call_state",
    "decide",
    "describe",
    "gives_up_at_once",
    "make_policy",
]
