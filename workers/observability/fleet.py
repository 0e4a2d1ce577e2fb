"""Figures the supervisor reads from Redis every few seconds with a client of its own:
each handler's consumer-group lag and pending entries, the age of its oldest pending
entry, its delayed retries and dead letters, and how many sagas are in each state.

They are the fleet's, not this process's: every replica of a deployment reports the same
values (aggregate them with ``max``, not ``sum``). Read with the functions ``seawall
status`` uses (``queues.backlog``), on a thread of their own, so that a slow or absent
Redis never holds up the supervisor's loop: while Redis does not answer, these gauges are
left out of ``/metrics`` rather than shown stale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from queues import saga_store
from queues.backlog import handler_backlog_sync, oldest_pending_ms_sync
from queues.connection import connect_sync, server_time_ms_sync
from queues.keys import HandlerKeys, SagaKeys, hash_tag
from workers.observability.totals import HandlerLabels

log = logging.getLogger("seawall.metrics")

SAMPLE_EVERY = 5.0
TIMEOUT = 2.0
"""Seconds the sampler's client waits for Redis (connect and each reply)."""
_SAGA_TAG = "saga:"


@dataclass(frozen=True, slots=True)
class HandlerFigures:
    stream: str
    handler: str
    lag: int | None
    """Entries of the user's stream not yet delivered to the handler's group (None: Redis
    cannot tell, after entries were deleted)."""
    pending: int
    """Delivered and not yet acked, plus redeliveries waiting on its retry stream."""
    oldest_pending_age: float | None
    """Seconds since the oldest pending entry was added to its stream (None: none)."""
    delayed: int
    dead_letters: int


@dataclass(frozen=True, slots=True)
class FleetFigures:
    handlers: list[HandlerFigures] = field(default_factory=list)
    sagas: dict[tuple[str, str], int] = field(default_factory=dict)
    """(saga, state) -> sagas"""


def saga_names(handlers: Sequence[HandlerLabels]) -> list[str]:
    """The saga types whose steps are among ``handlers``: a step reads a stream tagged
    ``{saga:<name>}`` (``queues.keys.SagaKeys``)."""
    names = set()
    for h in handlers:
        tag = hash_tag(h.stream)
        if tag.startswith(_SAGA_TAG) and tag != h.stream:
            names.add(tag[len(_SAGA_TAG):])
    return sorted(names)


def sample(client: redis.Redis, handlers: Sequence[HandlerLabels]) -> FleetFigures:
    """Read every figure once (raises ``redis.RedisError`` or ``OSError`` if Redis fails)."""
    now_ms = server_time_ms_sync(client)
    figures = []
    for h in handlers:
        keys = HandlerKeys(h.stream, h.name)
        backlog = handler_backlog_sync(client, keys)
        oldest = [ms for ms in (oldest_pending_ms_sync(client, keys.stream, keys.group),
                                oldest_pending_ms_sync(client, keys.retry, keys.group))
                  if ms is not None]
        main = backlog.group
        figures.append(HandlerFigures(
            stream=h.stream, handler=h.name, lag=None if main is None else main.lag,
            pending=(0 if main is None else main.pending) + backlog.retry_pending,
            oldest_pending_age=(max(0.0, (now_ms - min(oldest)) / 1000) if oldest
                                else None),
            delayed=backlog.delayed, dead_letters=backlog.dead_letters))
    sagas: dict[tuple[str, str], int] = {}
    for name in saga_names(handlers):
        for state, n in saga_store.counts_sync(client, SagaKeys(name)).items():
            sagas[(name, state)] = n
    return FleetFigures(figures, sagas)


class FleetSampler:
    """Samples :func:`sample` every ``every`` seconds on a daemon thread; ``latest`` is the
    last good sample, or None while Redis does not answer."""

    def __init__(self, url: str, handlers: Sequence[HandlerLabels], *,
                 every: float = SAMPLE_EVERY) -> None:
        self.url = url
        self.handlers = list(handlers)
        self.every = every
        self.latest: FleetFigures | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seawall-fleet-sampler",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT + 1)

    def _run(self) -> None:
        client = connect_sync(self.url, timeout=TIMEOUT)
        failing = False
        try:
            while not self._stop.is_set():
                try:
                    self.latest = sample(client, self.handlers)
                    if failing:
                        log.info("reading the fleet's figures from Redis again")
                    failing = False
                except (redis.RedisError, OSError) as exc:
                    self.latest = None
                    if not failing:
                        log.warning("cannot read the fleet's figures from Redis; left out "
                                    "of /metrics until it answers", extra={"error": repr(exc)})
                    failing = True
                self._stop.wait(self.every)
        finally:
            client.close()
