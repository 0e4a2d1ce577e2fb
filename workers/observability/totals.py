"""The supervisor's totals: every pool process's reports added up, per deployment.

Counters only ever grow: a report carries the counts since the process's previous report,
so a restarted process (which counts from zero) adds to what its predecessor had sent.
Gauges (in flight, capacity, breaker states, loop lag) are the last reported by each live
process; a process that died stops contributing them.

Pure bookkeeping, no I/O and no clock of its own: the caller passes ``now``
(``time.monotonic()``), so it is tested with plain numbers. Not thread-safe by itself: the
supervisor's hub holds a lock around it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from queues.outcome_counts import KINDS
from workers.observability.counting import SLOTS
from workers.observability.wire import Report

BREAKER_STATE_VALUES = {"closed": 0, "disabled": 0, "half_open": 1, "open": 2,
                        "forced_open": 2}
"""``seawall_circuit_breaker_state``: 0 closed (or disabled), 1 half-open, 2 open."""


@dataclass(slots=True)
class SlotView:
    """What the supervisor knows of one pool slot (``pool[index]``) and its process."""

    pool: str
    index: int
    pid: int | None = None
    running: bool = False
    started_at: float = 0.0
    """When its current process was started (``time.monotonic()``)."""
    failures: int = 0
    """Consecutive crashes (the supervisor's restart backoff)."""
    heard_at: float | None = None
    """When its current process last reported; None before its first report."""
    lag: float = 0.0
    read_age: float | None = None
    """Seconds since its last read of Redis, as of ``heard_at``."""
    saturated: bool = False
    in_flight: int = 0
    capacity: int = 0
    breakers: dict[str, str] = field(default_factory=dict)
    killed: str | None = None
    """Why the supervisor killed its current process (stuck), if it did."""
    stopping: bool = False
    """Its current process sent its last report: it is on its way out, not stuck."""

    def read_age_at(self, now: float) -> float | None:
        if self.read_age is None or self.heard_at is None:
            return None
        return self.read_age + (now - self.heard_at)


@dataclass(frozen=True, slots=True)
class HandlerLabels:
    """What the supervisor knows of a handler of the pools it runs (from the app)."""

    name: str
    stream: str
    pool: str
    breaker: bool = False


class Totals:
    """Counters and gauges of one supervisor's pools."""

    def __init__(self, handlers: Iterable[HandlerLabels] = ()) -> None:
        self.handlers = {h.name: h for h in handlers}
        self.processed: dict[tuple[str, str, str, str], int] = {}
        """(stream, handler, pool, outcome) -> messages"""
        self.durations: dict[tuple[str, str], list[float]] = {}
        """(handler, pool) -> counts per bucket (not cumulative), then the sum"""
        self.exceptions: dict[tuple[str, str], int] = {}
        self.transitions: dict[tuple[str, str, str], int] = {}
        self.reconnects: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self.slots: dict[str, SlotView] = {}
        for h in self.handlers.values():
            # Every outcome of every handler from the start, so that rate() has a zero to
            # start from instead of a series that appears with its first message.
            for kind in KINDS:
                self.processed[(h.stream, h.name, h.pool, kind)] = 0
            self.reconnects.setdefault(h.pool, 0)
            self.restarts.setdefault(h.pool, 0)

    # -- the supervisor's events ---------------------------------------------------------

    def slot(self, label: str, pool: str, index: int) -> SlotView:
        view = self.slots.get(label)
        if view is None:
            view = self.slots[label] = SlotView(pool, index)
            self.reconnects.setdefault(pool, 0)
            self.restarts.setdefault(pool, 0)
        return view

    def started(self, label: str, pool: str, index: int, pid: int, now: float,
                failures: int) -> None:
        view = self.slot(label, pool, index)
        view.pid, view.running, view.started_at, view.failures = pid, True, now, failures
        view.heard_at, view.read_age, view.killed, view.stopping = None, None, None, False
        view.lag, view.saturated, view.in_flight, view.capacity = 0.0, False, 0, 0
        view.breakers = {}

    def exited(self, label: str, failures: int) -> None:
        view = self.slots.get(label)
        if view is not None:
            view.running, view.pid, view.failures = False, None, failures
            view.in_flight, view.capacity, view.breakers = 0, 0, {}

    def restarted(self, pool: str) -> None:
        self.restarts[pool] = self.restarts.get(pool, 0) + 1

    def add(self, label: str, report: Report, now: float) -> None:
        """Add one report of the process in slot ``label``."""
        view = self.slots.get(label)
        if view is None or not view.running:
            return
        pool = view.pool
        view.heard_at, view.lag, view.read_age = now, report.lag, report.read_age
        view.saturated, view.in_flight, view.capacity = (report.saturated, report.in_flight,
                                                         report.capacity)
        view.breakers = dict(report.breakers)
        view.stopping = view.stopping or report.final
        for handler, stream, kind, n in report.processed:
            key = (stream, handler, pool, kind)
            self.processed[key] = self.processed.get(key, 0) + n
        for handler, counts in report.durations.items():
            if len(counts) != SLOTS + 1:
                continue  # another version's buckets: not addable to ours
            total = self.durations.get((handler, pool))
            if total is None:
                self.durations[(handler, pool)] = list(counts)
            else:
                for i, value in enumerate(counts):
                    total[i] += value
        for handler, error_type, n in report.exceptions:
            key2 = (handler, error_type)
            self.exceptions[key2] = self.exceptions.get(key2, 0) + n
        if view.index == 0:
            # Every process of a pool hears the same fleet-wide transitions: count them
            # once per pool, as its first slot heard them.
            for handler, before, after, n in report.transitions:
                key3 = (handler, before, after)
                self.transitions[key3] = self.transitions.get(key3, 0) + n
        if report.reconnects:
            self.reconnects[pool] = self.reconnects.get(pool, 0) + report.reconnects

    # -- gauges --------------------------------------------------------------------------

    def live(self) -> list[SlotView]:
        return [v for v in self.slots.values() if v.running]

    def per_pool(self) -> dict[str, dict[str, float]]:
        """pool -> in_flight, capacity, processes, lag (the live processes')."""
        out: dict[str, dict[str, float]] = {}
        for view in self.slots.values():
            pool = out.setdefault(view.pool, {"in_flight": 0, "capacity": 0, "processes": 0,
                                              "lag": 0.0})
            if not view.running:
                continue
            pool["processes"] += 1
            pool["in_flight"] += view.in_flight
            pool["capacity"] += view.capacity
            pool["lag"] = max(pool["lag"], view.lag)
        return out

    def breaker_states(self) -> dict[str, int]:
        """handler -> its breaker's state as the live processes heard it (the most open
        one: a process that heard "open" has not heard it close yet, or it is open)."""
        out: dict[str, int] = {}
        for view in self.live():
            for handler, state in view.breakers.items():
                value = BREAKER_STATE_VALUES.get(state)
                if value is not None:
                    out[handler] = max(out.get(handler, 0), value)
        return out
