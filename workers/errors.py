"""The exceptions a seawall user meets.

::

    SeawallError
    ├── ConfigError          the app is declared wrongly; raised when it is built, naming the fix
    └── HandlerError         raised by (or on behalf of) a handler to steer what happens next
        ├── NonRetryable     fail for good now: straight to the dead letters
        │   ├── StepAborted  a saga step gives up on its saga (``raise ctx.saga.abort(...)``):
        │   │                its saga compensates, nothing is dead-lettered
        │   ├── PayloadTooLarge  publishing a payload over the app's ``max_payload_bytes``
        │   │                (also a ValueError): nothing is written
        │   └── MessageRejected  an entry refused on arrival, before its handler ran
        │       ├── SignatureError   unsigned, tampered with, or under an unknown key
        │       └── MessageTooLarge  its payload is over ``max_payload_bytes``
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


class PayloadTooLarge(NonRetryable, ValueError):
    """A payload longer than the app's ``max_payload_bytes``, refused when published
    (``app.publish``, ``ctx.publish``, a saga's start): nothing was written."""


class MessageRejected(NonRetryable):
    """An entry refused as it arrived, before its handler ran: dead-lettered at once,
    never retried, never counted by the breaker, never taken for a saga step's failure."""


class SignatureError(MessageRejected):
    """The app has ``signing_keys`` and the entry is not signed, was changed after it was
    signed, or was signed under a key id the app does not have (the message says which)."""


class MessageTooLarge(MessageRejected):
    """The entry's payload is longer than the app's ``max_payload_bytes``; its dead
    letter keeps the other fields and ``payload_size``, not the payload."""


class Retry(HandlerError):
    """Try this message again after ``delay`` seconds (default: the handler's retry policy)."""

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(message)
        if delay is not None and delay < 0:
            raise ValueError("Retry(delay=...) must be >= 0 seconds")
        self.delay = delay


class HandlerTimeout(HandlerError, TimeoutError):
    """The handler did not finish within its timeout; counted as a failure and retried."""
