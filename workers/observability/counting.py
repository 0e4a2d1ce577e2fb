"""Counting settled messages in a pool process, in plain Python: the observer behind
``seawall_messages_processed_total``, ``seawall_process_duration_seconds`` and
``seawall_handler_exceptions_total``.

It runs on the pool's event loop for every message the ack pipeline confirmed, so it does
the least it can: a dict increment per (handler, kind), a bisect into a fixed list of
bucket counts for the duration, and a dict increment per (handler, error type) for a
failure. No lock (one thread), no file, no Prometheus object. It *is* the pool's outcome
counter (``workers.runtime.counts``, whose counts go to Redis for ``seawall status``),
extended, so that a message costs one observer call, not two. :meth:`MessageMetrics.take`
hands the counts since the last take to the reporter (``workers.observability.reporter``),
which sends them to the supervisor about once a second.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from workers.middleware import Call
from workers.outcome import Outcome
from workers.runtime.counts import OutcomeCounter

BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
"""Upper bounds (seconds, ``le``) of ``seawall_process_duration_seconds``: from 100 us,
for handlers that take a few tens of microseconds, to a minute. One more slot counts what
is above the last (``+Inf``)."""
SLOTS = len(BUCKETS) + 1
SUM = SLOTS
"""Index of the durations' sum in a handler's list of counts."""


@dataclass(slots=True)
class Deltas:
    """What a pool process counted since its last report."""

    processed: dict[tuple[str, str], int] = field(default_factory=dict)
    """(handler, kind) -> messages settled so"""
    durations: dict[str, list[float]] = field(default_factory=dict)
    """handler -> count per bucket (``BUCKETS``, then ``+Inf``; not cumulative), then the
    sum of the durations"""
    exceptions: dict[tuple[str, str], int] = field(default_factory=dict)
    """(handler, error type) -> failures"""

    def __bool__(self) -> bool:
        return bool(self.processed or self.durations or self.exceptions)


class MessageMetrics(OutcomeCounter):
    """The pool's outcome counter (``take`` and ``flush`` still serve ``seawall status``)
    that also counts what :class:`Deltas` holds (:meth:`take_deltas`)."""

    __slots__ = ("_durations", "_exceptions", "_processed")

    def __init__(self) -> None:
        super().__init__()
        self._processed: dict[tuple[str, str], int] = {}
        self._durations: dict[str, list[float]] = {}
        self._exceptions: dict[tuple[str, str], int] = {}

    def __call__(self, call: Call, outcome: Outcome) -> None:
        handler = call.handler
        # (``_value_``: the kind's plain str; an enum member's hash is a Python-level call)
        key = (handler, outcome.kind._value_)
        self._counts[key] += 1  # the outcome counts for Redis (OutcomeCounter's)
        processed = self._processed
        processed[key] = processed.get(key, 0) + 1
        duration = call.duration
        if duration:  # the handler (or its fallback) ran: 0.0 for parked, skipped, poison
            counts = self._durations.get(handler)
            if counts is None:
                counts = self._durations[handler] = [0] * (SLOTS + 1)
            counts[bisect_left(BUCKETS, duration)] += 1
            counts[SUM] += duration
        error = outcome.error
        if error is not None:
            failure = (handler, type(error).__name__)
            exceptions = self._exceptions
            exceptions[failure] = exceptions.get(failure, 0) + 1

    def take_deltas(self) -> Deltas:
        """The counts since the last take (the counting starts afresh); the outcome counts
        for Redis are taken apart (``take``)."""
        deltas = Deltas(self._processed, self._durations, self._exceptions)
        self._processed, self._durations, self._exceptions = {}, {}, {}
        return deltas
