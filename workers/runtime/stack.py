"""A handler's middleware stack, built once when its pool starts.

From the outside in (see :mod:`workers.middleware` for the user's view)::

    ProcessSpans     only when the app traces (``workers.runtime.tracing``): the message's
                     ``process <stream>`` span, around everything below
    Guard            only when there is user middleware: whatever a middleware raises
                     becomes the message's failure (the retry policy decides)
    app middleware   app.middleware(...), in the order added
    handler's own    @app.handler(..., middleware=[...]), in the order given
    BreakerLayer     breaker shut: park the message, or run the fallback; else record the
                     call's result for the fleet's breaker
    IdempotencyLayer already completed by this handler: skip it
    Invoke           decode, run the handler, and on a failure the retry policy's verdict

Each layer is one object with ``async __call__(call)``; a layer with nothing to do for a
handler (no breaker, not idempotent, no user middleware) is not in its stack at all, so
the common case pays for what it uses only.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import TYPE_CHECKING, Any

from queues.envelope import Envelope
from workers.context import Context
from workers.errors import HandlerTimeout
from workers.handler import HandlerFunc, HandlerSpec
from workers.middleware import Call, Middleware, Next
from workers.outcome import Kind, Outcome
from workers.runtime.gate import BreakerGate
from workers.runtime.policy import failure_outcome

if TYPE_CHECKING:
    from workers.integrity import Admit, Integrity
    from workers.runtime.tracing import Tracing

log = logging.getLogger("seawall.stack")

EntryKey = tuple[str, str]
"""(source stream, entry id)"""


class Invoke:
    """The innermost layer: decode the payload, call the function (the handler, or its
    fallback), and turn what happened into an outcome. A failure's staged follow-ups are
    dropped here: nobody will ever see them."""

    __slots__ = ("_admit", "_executor", "_fallback", "_func", "_policy", "_seal", "_spec",
                 "_timeout")

    def __init__(self, spec: HandlerSpec, func: HandlerFunc, executor: Executor, *,
                 timeout: float | None, fallback: bool = False,
                 integrity: Integrity | None = None, admission: Admit | None = None) -> None:
        # size limit and signature, checked before decoding (workers.integrity); the
        # handler's consumer shares ``admission`` to check each batch as it reads it
        self._admit = admission
        self._seal = integrity.seal if integrity is not None else None
        self._spec = spec
        self._func = func
        self._executor = executor
        self._timeout = timeout
        self._fallback = fallback
        self._policy = spec.retry_policy

    async def __call__(self, call: Call) -> Outcome:
        spec, func = self._spec, self._func
        if self._admit is not None and (refused := self._admit(call.envelope)) is not None:
            return refused
        started = time.monotonic()
        try:
            payload = spec.decode(call.envelope.payload)
            if func.wants_context:
                ctx = Context(call, spec.name, spec.stream, call.envelope,
                              fallback=self._fallback, seal=self._seal)
                args: tuple[Any, ...] = (payload, ctx)
            else:
                args = (payload,)
            if func.is_async:
                await func.func(*args)
            else:
                # (in a copy of this context: the thread's log lines carry the ids too)
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, contextvars.copy_context().run, partial(func.func, *args))
        except asyncio.CancelledError:
            if not call.timed_out:
                raise
            uncancel()
            error: BaseException = HandlerTimeout(
                f"{spec.name} ran longer than {self._timeout}s")
        except Exception as exc:
            error = exc
        else:
            call.duration = time.monotonic() - started
            if self._fallback:
                call.fallback = True
                return Outcome.fallback(call.take_staged())
            return Outcome.ok(call.take_staged())
        call.duration = time.monotonic() - started
        call.take_staged()
        try:
            return failure_outcome(self._policy, call.envelope, error, time.time())
        finally:
            # This frame is in the error's traceback: a local still holding the error (or
            # its outcome) when it returns would make a cycle (error -> traceback -> frame
            # -> error) that only the garbage collector frees: in a flood of failures,
            # collections would cost more than the rest of the failure path.
            del error


class IdempotencyLayer:
    """Skip a message this (``idempotent=True``) handler already completed: its process
    died between the handler's return and the ack, or the message was published again
    under the same id (a follow-up relayed twice)."""

    __slots__ = ("_done_at_fetch", "_inner", "_look_up")

    def __init__(self, inner: Next, done_at_fetch: dict[EntryKey, bool],
                 look_up: Callable[[Envelope], Awaitable[bool]]) -> None:
        self._inner = inner
        self._done_at_fetch = done_at_fetch
        """Looked up for a whole fetched batch in one round trip when it was read."""
        self._look_up = look_up
        """For entries taken back from a dead consumer, which were not looked up."""

    async def __call__(self, call: Call) -> Outcome:
        envelope = call.envelope
        done = self._done_at_fetch.pop((envelope.source, envelope.entry_id), None)
        if done is None:
            done = await self._look_up(envelope)
        if done:
            return Outcome.skipped()
        return await self._inner(call)


class BreakerLayer:
    """While the breaker is shut, a message goes to the fallback or is parked until the
    breaker may let probes in (its attempt not used up); otherwise the call runs and its
    result is recorded for the fleet's breaker."""

    __slots__ = ("_diverted", "_fallback", "_gate", "_inner")

    def __init__(self, inner: Next, gate: BreakerGate, diverted: set[EntryKey],
                 fallback: Next | None) -> None:
        self._inner = inner
        self._gate = gate
        self._diverted = diverted
        """Entries read while the breaker was shut (or beyond the probes granted)."""
        self._fallback = fallback

    async def __call__(self, call: Call) -> Outcome:
        gate = self._gate
        diverted = bool(self._diverted) and self._take_diverted(call.envelope)
        if diverted or gate.blocking:
            if self._fallback is None:
                return Outcome.parked(gate.resume_at_ms())
            return await self._fallback(call)
        outcome = await self._inner(call)
        if outcome.kind is not Kind.SKIPPED:  # a probe that called nothing proves nothing
            gate.record(outcome.error, call.duration)
        gate.record_probe_done()
        return outcome

    def _take_diverted(self, envelope: Envelope) -> bool:
        key = (envelope.source, envelope.entry_id)
        if key in self._diverted:
            self._diverted.discard(key)
            return True
        return False


class Guard:
    """Outermost when there is user middleware: an exception a middleware raises (or a
    middleware that returns something else than an Outcome) is the message's failure,
    decided by the retry policy, never the pool's crash."""

    __slots__ = ("_handler", "_inner", "_policy", "_timeout")

    def __init__(self, inner: Next, spec: HandlerSpec, timeout: float | None) -> None:
        self._inner = inner
        self._handler = spec.name
        self._policy = spec.retry_policy
        self._timeout = timeout

    async def __call__(self, call: Call) -> Outcome:
        try:
            outcome = await self._inner(call)
        except asyncio.CancelledError:
            if not call.timed_out:
                raise
            uncancel()
            error: BaseException = HandlerTimeout(
                f"{self._handler} ran longer than {self._timeout}s")
        except Exception as exc:
            log.warning("a middleware raised; the message fails", extra={
                "handler": self._handler, "message_id": call.message_id,
                "error": repr(exc)[:500]})
            error = exc
        else:
            if isinstance(outcome, Outcome):
                return outcome
            error = TypeError(f"a middleware of {self._handler!r} returned {outcome!r}, not "
                              "an Outcome: end it with `return await call_next(call)`")
        call.take_staged()
        return failure_outcome(self._policy, call.envelope, error, time.time())


def _bind(layer: Middleware, inner: Next) -> Next:
    async def run(call: Call) -> Outcome:
        return await layer(call, inner)

    run.__qualname__ = getattr(layer, "__qualname__", "middleware")
    return run


def uncancel() -> None:
    """Forget the watchdog's cancel: the timeout became the message's failure."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def build_stack(spec: HandlerSpec, *, executor: Executor, timeout: float | None,
                app_middleware: Sequence[Middleware], gate: BreakerGate | None,
                diverted: set[EntryKey], done_at_fetch: dict[EntryKey, bool],
                look_up_done: Callable[[Envelope], Awaitable[bool]],
                tracing: Tracing | None = None, integrity: Integrity | None = None,
                admission: Admit | None = None) -> Next:
    """The handler's whole stack, outermost layer returned. ``admission``: the check of
    the entries it reads, shared with its consumer (built from ``integrity`` if not
    given)."""
    if admission is None and integrity is not None:
        admission = integrity.admission(spec.stream)
    top: Next = Invoke(spec, spec.handler, executor, timeout=timeout, integrity=integrity,
                       admission=admission)
    if spec.idempotent:
        top = IdempotencyLayer(top, done_at_fetch, look_up_done)
    if gate is not None:
        fallback = (Invoke(spec, spec.fallback, executor, timeout=timeout, fallback=True,
                           integrity=integrity, admission=admission)
                    if spec.fallback is not None else None)
        top = BreakerLayer(top, gate, diverted, fallback)
    user = [*app_middleware, *spec.middleware]
    for layer in reversed(user):
        top = _bind(layer, top)
    if user:
        top = Guard(top, spec, timeout)
    if tracing is not None:
        top = tracing.layer(top, spec)
    return top
