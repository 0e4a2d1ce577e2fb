"""Circuit breakers: the configuration users write, and the state machine as pure functions.

Why pure: the machine must run atomically in Redis (``queues/lua/breaker_*.lua``) so the
whole fleet opens and closes together; this module is its readable specification, tested
with a fake clock, and a randomized test feeds the same outcomes to both and checks they
agree after every batch. The runtime itself talks to ``queues.breaker_store``; it uses this
module to classify outcomes (:meth:`CircuitBreaker.classify`) and to turn a configuration
into the store's arguments (:meth:`CircuitBreaker.params`).

::

    CLOSED ──window holds >= min_calls and failure rate or slow rate >= its threshold──▶ OPEN
    OPEN ──now >= open_until, at the next acquire──▶ HALF_OPEN
    HALF_OPEN ──half_open_calls probes succeed──▶ CLOSED (window cleared)
    HALF_OPEN ──a probe fails, or slow probes / probes >= slow_call_rate──▶ OPEN
    operators: any ──▶ FORCED_OPEN (until closed, or for a while, then HALF_OPEN),
               CLOSED (window cleared), DISABLED (always reads, records nothing), reset

Half-open probes are leased: :func:`acquire` grants at most ``half_open_calls`` permits
fleet-wide, each lease expiring after ``lease_ttl`` so a prober that died is replaced soon
(a live prober :func:`renew` s its lease while its probes run); only outcomes recorded with
a live lease count as probes (a straggler read before the breaker opened proves nothing
about the dependency now).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import ValidationError

from queues import breaker_store as store
from workers.errors import ConfigError, NonRetryable


class Outcome(IntEnum):
    """One call, as the breaker sees it; the values are the store's wire codes."""

    SUCCESS = store.SUCCESS
    FAILURE = store.FAILURE
    SLOW_SUCCESS = store.SLOW_SUCCESS
    SLOW_FAILURE = store.SLOW_FAILURE
    IGNORED = store.IGNORED

    @property
    def failed(self) -> bool:
        return self in (Outcome.FAILURE, Outcome.SLOW_FAILURE)

    @property
    def slow(self) -> bool:
        return self in (Outcome.SLOW_SUCCESS, Outcome.SLOW_FAILURE)


class State(StrEnum):
    CLOSED = store.CLOSED
    OPEN = store.OPEN
    HALF_OPEN = store.HALF_OPEN
    FORCED_OPEN = store.FORCED_OPEN
    DISABLED = store.DISABLED


def _whole(name: str, value: Any, low: int, high: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"CircuitBreaker({name}={value!r}): {fix}")


def _number(name: str, value: Any, fix: str, *, rate: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (0 < value <= 1 if rate else 0 < value < float("inf"))
    if not ok:
        raise ConfigError(f"CircuitBreaker({name}={value!r}): {fix}")


_NEVER_COUNTED = (ValidationError, NonRetryable)
"""Failures that say nothing about a dependency: the message itself is at fault."""


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """A handler's circuit breaker; every handler has one with these defaults unless it is
    registered with ``breaker=None``.

    - ``window=20``: the last 20 calls (count-based sliding window) decide.
    - ``min_calls=10``: no verdict before the window holds 10 calls.
    - ``failure_rate=0.5``: open when half the calls in the window failed.
    - ``slow_call=60.0`` seconds: a call that took longer is slow (success or not).
    - ``slow_call_rate=1.0``: open when every call in the window was slow.
    - ``open_for=30.0`` seconds: stop reading this long, then let probes through.
    - ``half_open_calls=1``: probes (fleet-wide) that must all succeed to close it again.
    - ``exclude=()``: business exceptions that never count, like ``InsufficientFunds``.

    pydantic ``ValidationError``, ``NonRetryable`` and exceptions that are not ``Exception``
    (cancellation at shutdown) never count either: they say nothing about a dependency.
    """

    window: int = 20
    min_calls: int = 10
    failure_rate: float = 0.5
    slow_call: float = 60.0
    slow_call_rate: float = 1.0
    open_for: float = 30.0
    half_open_calls: int = 1
    exclude: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        _whole("window", self.window, 1, 10_000,
               "window is a number of calls between 1 and 10000, e.g. window=20")
        _whole("min_calls", self.min_calls, 1, self.window,
               f"min_calls must be between 1 and window ({self.window}): the window never "
               "holds more calls than that; lower min_calls or widen the window")
        _number("failure_rate", self.failure_rate,
                "failure_rate is a fraction in (0, 1], e.g. 0.5 for 50%", rate=True)
        _number("slow_call_rate", self.slow_call_rate,
                "slow_call_rate is a fraction in (0, 1], e.g. 0.8 for 80%", rate=True)
        _number("slow_call", self.slow_call,
                "slow_call is a positive number of seconds, e.g. slow_call=2.0")
        _number("open_for", self.open_for,
                "open_for is a positive number of seconds, e.g. open_for=30.0")
        if self.open_for < 0.001:
            raise ConfigError(f"CircuitBreaker(open_for={self.open_for!r}): use at least 0.001 s")
        _whole("half_open_calls", self.half_open_calls, 1, 10_000,
               "half_open_calls is a number of probe calls >= 1, e.g. half_open_calls=1")
        object.__setattr__(self, "exclude", _exception_classes(self.exclude))

    def ignores(self, error: BaseException) -> bool:
        """True when ``error`` must never trip the breaker."""
        return (not isinstance(error, Exception) or isinstance(error, _NEVER_COUNTED)
                or isinstance(error, self.exclude))

    def classify(self, error: BaseException | None, duration: float) -> Outcome:
        """The outcome of one call that raised ``error`` (None: it returned) after
        ``duration`` seconds; a call is slow when it took longer than ``slow_call``."""
        if error is not None and self.ignores(error):
            return Outcome.IGNORED
        slow = duration > self.slow_call
        if error is None:
            return Outcome.SLOW_SUCCESS if slow else Outcome.SUCCESS
        return Outcome.SLOW_FAILURE if slow else Outcome.FAILURE

    def params(self) -> store.BreakerParams:
        """The arguments of ``queues.breaker_store``'s functions (times in ms)."""
        return store.BreakerParams(
            window=self.window,
            min_calls=self.min_calls,
            failure_rate=float(self.failure_rate),
            slow_call_rate=float(self.slow_call_rate),
            open_for_ms=round(self.open_for * 1000),
            half_open_calls=self.half_open_calls,
        )

    def to_record(self) -> dict[str, Any]:
        """JSON-able configuration for the handler registry (exclusions by qualified name)."""
        return {
            "window": self.window,
            "min_calls": self.min_calls,
            "failure_rate": self.failure_rate,
            "slow_call": self.slow_call,
            "slow_call_rate": self.slow_call_rate,
            "open_for": self.open_for,
            "half_open_calls": self.half_open_calls,
            "exclude": [f"{e.__module__}.{e.__qualname__}" for e in self.exclude],
        }


def _exception_classes(value: Any) -> tuple[type[BaseException], ...]:
    items: Iterable[Any] = (value,) if isinstance(value, type) else value
    try:
        classes = tuple(items)
    except TypeError:
        classes = (value,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ConfigError(
                f"CircuitBreaker(exclude=...): {cls!r} is not an exception class; pass a tuple "
                "of classes, e.g. exclude=(InsufficientFunds,)"
            )
    return classes


# -- state -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    """Half-open probe permits held by one consumer until it records them or they expire."""

    id: str
    permits: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A breaker's state; times in seconds on the caller's clock."""

    state: State = State.CLOSED
    window: tuple[Outcome, ...] = ()
    opened_at: float | None = None
    open_until: float | None = None
    """When an open breaker turns half-open; None when forced open without a duration."""
    probe_calls: int = 0
    """Half-open: probes that succeeded so far (failed ones reopen at once)."""
    probe_slow: int = 0
    leases: tuple[Lease, ...] = ()
    lease_seq: int = 0

    @property
    def probes_granted(self) -> int:
        """Half-open probe permits used or leased out."""
        return self.probe_calls + sum(lease.permits for lease in self.leases)


@dataclass(frozen=True, slots=True)
class Permit:
    """May a consumer read now, and how many messages?"""

    state: State
    allowed: bool
    probes: int | None = None
    """Most messages to read: None = no limit (closed, disabled)."""
    lease: str | None = None
    retry_in: float | None = 0.0
    """When not allowed: ask again after this long; None = until an operator acts."""


def rates(state: BreakerState) -> tuple[float, float]:
    """(failure rate, slow-call rate) of the window; (0, 0) when it is empty."""
    calls = len(state.window)
    if not calls:
        return 0.0, 0.0
    failures = sum(1 for o in state.window if o.failed)
    slow = sum(1 for o in state.window if o.slow)
    return failures / calls, slow / calls


def _open(state: BreakerState, config: CircuitBreaker, now: float) -> BreakerState:
    return replace(state, state=State.OPEN, opened_at=now, open_until=now + config.open_for,
                   probe_calls=0, probe_slow=0, leases=())


def _closed(state: BreakerState) -> BreakerState:
    return replace(state, state=State.CLOSED, window=(), opened_at=None, open_until=None,
                   probe_calls=0, probe_slow=0, leases=())


def _settle(config: CircuitBreaker, state: BreakerState, now: float) -> BreakerState:
    """Half-open with enough good probes: closed, unless too many of them were slow."""
    if state.probe_calls < config.half_open_calls:
        return state
    if state.probe_slow / state.probe_calls >= config.slow_call_rate:
        return _open(state, config, now)
    return _closed(state)


def transition(config: CircuitBreaker, state: BreakerState, outcome: Outcome, now: float,
               *, lease: str | None = None) -> BreakerState:
    """The breaker after one call's ``outcome``; half-open counts it only with a live lease."""
    if state.state is State.CLOSED:
        if outcome is Outcome.IGNORED:
            return state
        window = (*state.window, outcome)[-config.window:]
        state = replace(state, window=window)
        if len(window) >= config.min_calls:
            failure_rate, slow_rate = rates(state)
            if failure_rate >= config.failure_rate or slow_rate >= config.slow_call_rate:
                return _open(state, config, now)
        return state
    if state.state is not State.HALF_OPEN or lease is None:
        return state
    held = next((held for held in state.leases if held.id == lease), None)
    if held is None or held.permits <= 0:
        return state
    leases = tuple(replace(h, permits=h.permits - 1) if h is held else h for h in state.leases)
    state = replace(state, leases=leases)
    if outcome.failed:
        return _open(state, config, now)
    if outcome is Outcome.IGNORED:
        return state
    state = replace(state, probe_calls=state.probe_calls + 1,
                    probe_slow=state.probe_slow + outcome.slow)
    return _settle(config, state, now)


def record(config: CircuitBreaker, state: BreakerState, outcomes: Iterable[Outcome],
           now: float, *, lease: str | None = None) -> BreakerState:
    """One read batch's outcomes, then ``lease`` released (what ``breaker_record.lua`` does)."""
    for outcome in outcomes:
        before = state.state
        state = transition(config, state, outcome, now, lease=lease)
        if state.state is not before:
            break
    return replace(state, leases=tuple(h for h in state.leases if h.id != lease))


def _live(state: BreakerState, now: float) -> tuple[Lease, ...]:
    return tuple(held for held in state.leases if held.expires_at > now)


def may_read(config: CircuitBreaker, state: BreakerState, now: float) -> Permit:
    """May a consumer read now, and how many probes could it get? (Grants nothing.)"""
    if state.state in (State.CLOSED, State.DISABLED):
        return Permit(state.state, True)
    if state.state in (State.OPEN, State.FORCED_OPEN):
        if state.open_until is None:
            return Permit(state.state, False, 0, retry_in=None)
        if now < state.open_until:
            return Permit(state.state, False, 0, retry_in=state.open_until - now)
        return Permit(State.HALF_OPEN, True, config.half_open_calls)
    live = _live(state, now)
    free = config.half_open_calls - state.probe_calls - sum(h.permits for h in live)
    if free > 0:
        return Permit(state.state, True, free)
    return Permit(state.state, False, 0, retry_in=min((h.expires_at for h in live), default=now)
                  - now)


def acquire(config: CircuitBreaker, state: BreakerState, now: float, *, lease_ttl: float,
            want: int | None = None) -> tuple[BreakerState, Permit]:
    """:func:`may_read`, granting: open turns half-open when due, expired leases are
    reclaimed, and up to ``want`` free probe permits go into a new lease."""
    if state.state in (State.OPEN, State.FORCED_OPEN):
        if state.open_until is None or now < state.open_until:
            return state, may_read(config, state, now)
        state = replace(state, state=State.HALF_OPEN, probe_calls=0, probe_slow=0, leases=())
    if state.state is not State.HALF_OPEN:
        return state, may_read(config, state, now)
    state = replace(state, leases=_live(state, now))
    if state.probe_calls >= config.half_open_calls:
        state = _settle(config, replace(state, leases=()), now)
        return state, may_read(config, state, now)
    permit = may_read(config, state, now)
    if not permit.allowed or permit.probes is None:
        return state, permit
    grant = permit.probes if want is None else min(permit.probes, want)
    if grant < 1:
        return state, Permit(state.state, False, 0, retry_in=0.0)
    seq = state.lease_seq + 1
    held = Lease(str(seq), grant, now + lease_ttl)
    state = replace(state, leases=(*state.leases, held), lease_seq=seq)
    return state, Permit(state.state, True, grant, lease=held.id)


def renew(state: BreakerState, lease: str, now: float, *,
          lease_ttl: float) -> tuple[BreakerState, bool]:
    """A prober whose probes still run keeps its lease until ``now + lease_ttl`` (never
    shortening it). Only a live lease of a half-open breaker is renewed: an expired one may
    already have been replaced by another prober's. Returns whether it was renewed."""
    if state.state is not State.HALF_OPEN:
        return state, False
    held = next((h for h in state.leases if h.id == lease and h.expires_at > now), None)
    if held is None:
        return state, False
    until = max(held.expires_at, now + lease_ttl)
    leases = tuple(replace(h, expires_at=until) if h is held else h for h in state.leases)
    return replace(state, leases=leases), True


# -- operators ---------------------------------------------------------------------------


def force_open(state: BreakerState, now: float, *, duration: float | None = None) -> BreakerState:
    """Open whatever the rates say; half-open after ``duration`` s, or never when None."""
    return replace(state, state=State.FORCED_OPEN, opened_at=now,
                   open_until=None if duration is None else now + duration,
                   probe_calls=0, probe_slow=0, leases=())


def force_close(state: BreakerState) -> BreakerState:
    """Closed with an empty window (a full one would reopen at the next failure)."""
    return _closed(state)


def reset(state: BreakerState) -> BreakerState:
    """As new; only the lease counter survives, so old lease ids never match new leases."""
    return BreakerState(lease_seq=state.lease_seq)


def disable(state: BreakerState) -> BreakerState:
    """Always lets consumers read and records nothing, until closed or reset."""
    return replace(_closed(state), state=State.DISABLED)


def state_from_snapshot(snapshot: store.BreakerSnapshot) -> BreakerState:
    """The pure state of what ``queues.breaker_store.read_state`` found (ms -> s)."""

    def seconds(ms: int | None) -> float | None:
        return None if ms is None else ms / 1000

    return BreakerState(
        state=State(snapshot.state),
        window=tuple(Outcome(code) for code in snapshot.window),
        opened_at=seconds(snapshot.opened_at_ms),
        open_until=seconds(snapshot.open_until_ms),
        probe_calls=snapshot.probe_calls,
        probe_slow=snapshot.probe_slow,
        leases=tuple(Lease(h.id, h.permits, h.expires_ms / 1000) for h in snapshot.leases),
        lease_seq=snapshot.lease_seq,
    )
