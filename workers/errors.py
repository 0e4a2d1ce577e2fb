"""The exceptions a seawall user meets.

::

    SeawallError
    ├── ConfigError          the app is declared wrongly; raised when it is built, naming the fix
    └── HandlerError         raised by (or on behalf of) a handler to steer what happens next
        ├── NonRetryable     fail for good now: straight to the dead letters
        │   └── StepAborted  a saga step gives up on its saga (``raise ctx.saga.abort(...)``):
        │                    its saga compensates, nothing is dead-lettered
        ├── Retry            try again after ``delay`` seconds (overrides the policy's wait)
        └── HandlerTimeout   the handler ran past its pool's or its own timeout (retried)

An open circuit breaker raises nothing: the handler's consumers stop reading, and messages
already read are parked or go to the fallback.
"""

from __future__ import annotations


class SeawallError(Exception):
    """Base of every seawall exception."""


class ConfigError(SeawallError, ValueError):
    """An app, pool or handler declared wrongly. The message says how to fix it."""


class HandlerError(SeawallError):
    """Raised inside a handler to choose what happens to the message."""


class NonRetryable(HandlerError):
    """This message can never succeed: dead-letter it now, with this exception as the reason."""


class StepAborted(NonRetryable):
    """A saga step decided its saga cannot go on (a card declined): no retries, no dead
    letter; the steps that committed are compensated, last first."""


class Retry(HandlerError):
    """Try this message again after ``delay`` seconds (default: the handler's retry policy)."""

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(message)
        if delay is not None and delay < 0:
            raise ValueError("Retry(delay=...) must be >= 0 seconds")
        self.delay = delay


class HandlerTimeout(HandlerError, TimeoutError):
    """The handler did not finish within its timeout; counted as a failure and retried."""
