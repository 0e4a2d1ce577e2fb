"""Declaring a choreographed saga: its steps, their compensations, its outcome handler, and
starting one.

::

    checkout = Saga(app, "checkout", deadline=timedelta(minutes=15))

    @checkout.step("orders", pool="payments")            # reacts to what start() sends
    async def charge(order: OrderPlaced, ctx: Context) -> None:
        ...
        ctx.saga.remember(ChargeMemo(charge_id=...))     # what its compensation gets
        await ctx.publish("payments", PaymentCharged(...))   # the next step's event

    @charge.compensate                                    # a handler of its own
    async def refund(memo: ChargeMemo, ctx: Context) -> None: ...

Each step and each compensation is an ordinary seawall handler (consumer group, pool,
retries, dead letters, breaker). A step's events to a stream that another step of the saga
reacts to stay inside the saga (``seawall:{saga:checkout}:on:<stream>``, the saga's slot),
so the step's ack, its saga's ledger and the next event change in one script. A step that
publishes no event for another step ends the saga ``completed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from queues import saga_store
from queues.envelope import encode
from queues.keys import SagaKeys
from sagas.settlement import SagaRuntime, StepPlugin, UndoPlugin
from workers.app import App
from workers.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
Payload = BaseModel | Mapping[str, Any] | str | bytes


class Step:
    """A declared step; ``@step.compensate`` declares what undoes it."""

    def __init__(self, saga: Saga, name: str, stream: str, func: Callable[..., Any],
                 pool: str | None) -> None:
        self.saga = saga
        self.name = name
        self.stream = stream
        self.func = func
        self.pool = pool
        self.compensation: Callable[..., Any] | None = None

    @overload
    def compensate(self, func: F, /) -> F: ...

    @overload
    def compensate(self, func: None = None, /, **options: Any) -> Callable[[F], F]: ...

    def compensate(self, func: F | None = None, /, **options: Any) -> F | Callable[[F], F]:
        """``@step.compensate`` or ``@step.compensate(pool=..., stop=...)``: the handler
        that undoes this step, given the step's memo (or, without one, the event the step
        handled). Its retries, dead letters and breaker are its own."""

        def register(f: F) -> F:
            if self.compensation is not None:
                raise ConfigError(f"saga {self.saga.name!r}: step {self.name!r} has a "
                                  "compensation already; declare one per step")
            self.compensation = f
            self.saga._register_compensation(self, f, options)
            return f

        return register(func) if func is not None else register

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Step({self.saga.name!r}, {self.name!r}, on={self.stream!r})"


class Saga:
    """A saga type declared on an app."""

    def __init__(self, app: App, name: str, *, deadline: timedelta | float | None = None,
                 retention: timedelta | float = timedelta(days=7)) -> None:
        try:
            self.keys = SagaKeys(name)
        except ValueError as exc:
            raise ConfigError(f"Saga({name!r}): {exc}") from None
        self.app = app
        self.name = name
        self.deadline = _seconds(deadline, "deadline")
        retention_s = _seconds(retention, "retention")
        if retention_s is None or retention_s < 1:
            raise ConfigError(f"Saga({name!r}): retention must be at least a second")
        self.steps: list[Step] = []
        self.has_outcome_handler = False
        self.runtime = SagaRuntime(self.keys, int(retention_s), self._undoable,
                                   lambda: self.has_outcome_handler, app.integrity)

    # -- declaring -------------------------------------------------------------------------

    def step(self, stream: str, *, name: str | None = None, pool: str | None = None,
             undo_if_failed: bool = False, **options: Any) -> Callable[[F], Step]:
        """Declare the step that reacts to events on ``stream`` (the first step declared
        reacts to what :meth:`start` sends). ``undo_if_failed``: when this step fails for
        good, run its own compensation too (it may have partly happened). Other options
        are the handler's (``stop``, ``wait``, ``breaker``, ``timeout``...)."""

        def register(func: F) -> Step:
            step_name = name or func.__name__
            if any(s.name == step_name for s in self.steps):
                raise ConfigError(f"saga {self.name!r}: step name {step_name!r} is used "
                                  "twice; give one of them name=...")
            if any(s.stream == stream for s in self.steps):
                raise ConfigError(f"saga {self.name!r}: two steps react to {stream!r}; a "
                                  "saga's events name the step they are for by their stream")
            if "idempotent" in options or "plugin" in options:
                raise ConfigError(f"saga {self.name!r}: a step is idempotent by design; "
                                  "drop idempotent= / plugin=")
            plugin = StepPlugin(self.runtime, step_name, self._routes, undo_if_failed)
            self.app.handler(self.keys.on(stream), name=f"{self.name}.{step_name}",
                             pool=pool, idempotent=True, plugin=plugin, **options)(func)
            step = Step(self, step_name, stream, func, pool)
            self.steps.append(step)
            return step

        return register

    def _register_compensation(self, step: Step, func: Callable[..., Any],
                               options: dict[str, Any]) -> None:
        options.setdefault("pool", step.pool)
        self.app.handler(self.keys.undo(step.name), name=f"{self.name}.{step.name}.undo",
                         idempotent=True, plugin=UndoPlugin(self.runtime, step.name),
                         **options)(func)

    @overload
    def on_outcome(self, func: F, /) -> F: ...

    @overload
    def on_outcome(self, func: None = None, /, **options: Any) -> Callable[[F], F]: ...

    def on_outcome(self, func: F | None = None, /, **options: Any) -> F | Callable[[F], F]:
        """``@saga.on_outcome``: a handler called once per finished saga with a
        :class:`~sagas.models.SagaOutcome` (completed, compensated or failed)."""

        def register(f: F) -> F:
            options.setdefault("idempotent", True)
            self.app.handler(self.keys.outcome, name=f"{self.name}.on_outcome",
                             **options)(f)
            self.has_outcome_handler = True
            return f

        return register(func) if func is not None else register

    def _routes(self) -> dict[str, str]:
        return {s.stream: s.name for s in self.steps}

    def _undoable(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps if s.compensation is not None)

    # -- starting --------------------------------------------------------------------------

    def _start_args(self, payload: Payload, saga_id: str, type: str | None
                    ) -> tuple[str, dict[str, str | bytes], int, int]:
        if not self.steps:
            raise ConfigError(f"saga {self.name!r} has no step to start with")
        if not saga_id or not isinstance(saga_id, str) or "{" in saga_id or "}" in saga_id:
            raise ValueError(f"saga_id must be a non-empty string without braces, "
                             f"got {saga_id!r}")
        first = self.steps[0]
        fields = encode(payload, type=type, message_id=f"{saga_id}:start",
                        correlation_id=saga_id,
                        headers={"saga": self.name, "saga_id": saga_id, "step": first.name})
        target = self.keys.on(first.stream)
        self.app.integrity.seal(target, fields)
        now_ms = int(time.time() * 1000)
        deadline_ms = now_ms + int(self.deadline * 1000) if self.deadline else 0
        return target, fields, deadline_ms, now_ms

    async def start(self, payload: Payload, *, saga_id: str, type: str | None = None) -> bool:
        """Start the saga ``saga_id`` with ``payload`` as the first step's event. Idempotent
        on ``saga_id``: False if that saga is running or finished within the retention."""
        first, fields, deadline_ms, now_ms = self._start_args(payload, saga_id, type)
        with self.app.sending(first, fields):  # (a send span, if tracing: the saga's trace)
            return await saga_store.start(self.app.async_client, self.runtime.layout,
                                          saga_id=saga_id, first_stream=first, fields=fields,
                                          deadline_ms=deadline_ms, now_ms=now_ms)

    def start_sync(self, payload: Payload, *, saga_id: str, type: str | None = None) -> bool:
        """:meth:`start` from synchronous code."""
        first, fields, deadline_ms, now_ms = self._start_args(payload, saga_id, type)
        with self.app.sending(first, fields):
            return saga_store.start_sync(self.app.sync_client, self.runtime.layout,
                                         saga_id=saga_id, first_stream=first, fields=fields,
                                         deadline_ms=deadline_ms, now_ms=now_ms)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, steps={[s.name for s in self.steps]})"


def _seconds(value: timedelta | float | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ConfigError(f"{what} must be positive, got {value!r}")
    return seconds
