"""What a pool process tells its supervisor, about once a second: one JSON object per line
on a pipe the supervisor made for it (``ENV_FD`` names the pipe's write end in the child).

A report carries the pool's heartbeat (its event loop's lag, how long ago it last read from
Redis), its gauges sampled when it was sent (in flight, capacity, breaker states heard) and
its counts *since the previous report* (deltas). Deltas are what let the supervisor keep
totals that never go down: a restarted process starts counting from zero and its reports
are added to what its predecessor sent.

Only this module knows the field names; :func:`encode` and :func:`decode` are inverses.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

ENV_FD = "SEAWALL_TELEMETRY_FD"
"""The file descriptor (in the pool process) of the pipe's write end."""
ENV_METRICS = "SEAWALL_METRICS"
"""``1``: count messages (the supervisor serves ``/metrics``); otherwise only heartbeats."""


class WireError(ValueError):
    """A line that is not a report."""


@dataclass(slots=True)
class Report:
    """One report of one pool process."""

    pid: int
    lag: float = 0.0
    """The longest delay of the event loop since the last report, in seconds."""
    read_age: float | None = None
    """Seconds since a fetch loop last completed a read of Redis (one that found nothing
    counts), when the report was sent; ``None`` before the first."""
    saturated: bool = False
    """Every slot of the pool is taken: its fetchers wait for handlers, not for Redis."""
    in_flight: int = 0
    capacity: int = 0
    processed: list[tuple[str, str, str, int]] = field(default_factory=list)
    """(handler, stream, kind, messages)"""
    durations: dict[str, list[float]] = field(default_factory=dict)
    """handler -> counts per bucket (not cumulative, ``+Inf`` last), then their sum"""
    exceptions: list[tuple[str, str, int]] = field(default_factory=list)
    """(handler, error type, failures)"""
    breakers: dict[str, str] = field(default_factory=dict)
    """handler -> the breaker state its gate last heard (only gates that heard one)"""
    transitions: list[tuple[str, str, str, int]] = field(default_factory=list)
    """(handler, from, to, times heard)"""
    reconnects: int = 0
    """Waits for Redis to come back (each loop that found it gone counts its own)."""
    final: bool = False
    """The process's last report: it is stopping."""


def encode(report: Report) -> bytes:
    data: dict[str, Any] = {"pid": report.pid, "lag": round(report.lag, 6),
                            "read_age": (None if report.read_age is None
                                         else round(report.read_age, 3)),
                            "saturated": report.saturated, "in_flight": report.in_flight,
                            "capacity": report.capacity}
    for name in ("processed", "durations", "exceptions", "breakers", "transitions"):
        value = getattr(report, name)
        if value:
            data[name] = value
    if report.reconnects:
        data["reconnects"] = report.reconnects
    if report.final:
        data["final"] = True
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WireError(f"not a count: {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(f"not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise WireError(f"not a finite non-negative number: {value!r}")
    return number


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise WireError(f"not a name: {value!r}")
    return value


def decode(line: bytes) -> Report:
    """The report on ``line``; :class:`WireError` for anything else (the supervisor logs
    it and goes on: a confused child must not stop the supervisor)."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WireError("not a JSON object")
    try:
        read_age = data.get("read_age")
        from_child = Report(
            pid=_count(data["pid"]), lag=_number(data.get("lag", 0.0)),
            read_age=None if read_age is None else _number(read_age),
            saturated=bool(data.get("saturated", False)),
            in_flight=_count(data.get("in_flight", 0)),
            capacity=_count(data.get("capacity", 0)),
            processed=[(_text(h), _text(s), _text(k), _count(n))
                       for h, s, k, n in data.get("processed", [])],
            durations={_text(h): [_number(v) for v in counts]
                       for h, counts in data.get("durations", {}).items()},
            exceptions=[(_text(h), _text(t), _count(n))
                        for h, t, n in data.get("exceptions", [])],
            breakers={_text(h): _text(s) for h, s in data.get("breakers", {}).items()},
            transitions=[(_text(h), _text(a), _text(b), _count(n))
                         for h, a, b, n in data.get("transitions", [])],
            reconnects=_count(data.get("reconnects", 0)),
            final=bool(data.get("final", False)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError(f"malformed report: {exc!r}") from None
    return from_child
