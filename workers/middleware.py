"""The seam around every handler call: :class:`Call`, middleware and observers.

A middleware wraps the running of one message, like Starlette's (``call_next``)::

    async def timing(call: Call, call_next: Next) -> Outcome:
        started = time.perf_counter()
        outcome = await call_next(call)          # the inner layers and the handler
        print(call.handler, outcome.kind, time.perf_counter() - started)
        return outcome                           # or another Outcome

    app.middleware(timing)                       # every handler, outermost first
    @app.handler("orders", middleware=[audit])   # one handler, inside the app's

The stack is built once per handler when its pool starts. From the outside in:
the app's middleware (in the order added), the handler's (in the order given), then the
built-in layers: the circuit breaker (parks the message or runs the fallback while open;
records the call's result), idempotency (skips a message already completed), and the call
itself (decode, run, and the retry policy's verdict on a failure). ``call_next`` does not
raise for a failing handler: it returns a ``retry`` or ``dead_letter`` outcome carrying the
error. An exception raised by a middleware is the message's failure (the retry policy
decides), never the pool's crash.

An observer is called with every settled message after the ack pipeline confirmed its
outcome in Redis, on the pool's event loop: keep it short and non-blocking (count, enqueue).
With no observer registered nothing is done per message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeAlias

from queues.envelope import Envelope
from workers.outcome import NO_FOLLOW_UPS, FollowUp, Outcome


class Call:
    """One message on its way through a handler's middleware."""

    __slots__ = ("_staged", "duration", "envelope", "fallback", "handler", "memo", "pool",
                 "started", "stream", "timed_out")

    def __init__(self, handler: str, pool: str, stream: str, envelope: Envelope,
                 started: float) -> None:
        self.handler = handler
        self.pool = pool
        self.stream = stream
        """The user's stream the message was published to (also for retries and replays)."""
        self.envelope = envelope
        self.started = started
        """``time.monotonic()`` when a worker took the message."""
        self.duration = 0.0
        """Seconds the handler (or its fallback) ran; 0 if it did not run."""
        self.timed_out = False
        """Set by the pool's watchdog when the message overran its timeout."""
        self.fallback = False
        """The fallback ran instead of the handler (the breaker was open)."""
        self._staged: list[FollowUp] | None = None
        self.memo: bytes | None = None
        """What a saga step remembered for its compensation (JSON), if anything."""

    @property
    def message_id(self) -> str:
        return self.envelope.message_id

    @property
    def entry_id(self) -> str:
        return self.envelope.entry_id

    @property
    def attempt(self) -> int:
        return self.envelope.attempt

    @property
    def correlation_id(self) -> str:
        return self.envelope.correlation_id

    @property
    def headers(self) -> dict[str, str]:
        return self.envelope.headers

    # -- follow-ups (the context's publishing interface) ---------------------------------

    def stage(self, follow_up: FollowUp) -> None:
        """Hold ``follow_up`` until the message's ack commits it (or its failure drops it)."""
        if self._staged is None:
            self._staged = [follow_up]
        else:
            self._staged.append(follow_up)

    def remember(self, memo: bytes) -> None:
        """Keep ``memo`` (JSON) for the saga step's compensation, committed with the ack."""
        self.memo = memo

    def take_staged(self) -> tuple[FollowUp, ...]:
        """The follow-ups staged so far, handed over once (an attempt that fails drops
        them: nobody downstream ever sees them)."""
        staged = self._staged
        if staged is None:
            return NO_FOLLOW_UPS
        self._staged = None
        return tuple(staged)

    def __repr__(self) -> str:
        return (f"Call(handler={self.handler!r}, message_id={self.message_id!r}, "
                f"attempt={self.attempt})")


class Next(Protocol):
    """The rest of the stack, inside this layer: ``await call_next(call)``."""

    def __call__(self, call: Call, /) -> Awaitable[Outcome]: ...


Middleware: TypeAlias = Callable[[Call, Next], Awaitable[Outcome]]
"""``async def layer(call, call_next) -> Outcome``."""
Observer: TypeAlias = Callable[[Call, Outcome], None]
"""``def observer(call, outcome) -> None``, after the outcome is settled in Redis."""
