"""What ``seawall status`` reports, gathered from Redis alone (no app import needed):
per handler its stream, pool, group, lag, pending, consumers, delayed retries, dead
letters and how its messages were settled (the outcome counts); per pool the processes
whose heartbeat is recent; per saga type (found in the registry by its handlers' streams)
how many sagas are in each state. On a Redis Cluster, per handler the node its stream
lives on."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from queues import outcome_counts, saga_store
from queues.backlog import handler_backlog_sync
from queues.breaker_store import read_state_sync
from queues.connection import is_cluster
from queues.registry_store import read_heartbeats_sync
from queues.saga_registry import saga_types
from workers.registry import HandlerRecord, read_registry_sync

ALIVE_WITHIN_MS = 15_000


@dataclass(frozen=True, slots=True)
class HandlerStatus:
    name: str
    stream: str
    pool: str
    app: str
    group: str
    lag: int | None
    pending: int
    consumers: int
    retry_pending: int
    delayed: int
    dead_letters: int
    breaker: str | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    """Messages settled so far, by kind (every kind of ``queues.outcome_counts.KINDS``,
    0 when never counted)."""
    node: str | None = None
    """On a Redis Cluster, the master serving the stream's slot (``host:port``), which
    holds every key of the handler; None on one Redis."""


@dataclass(frozen=True, slots=True)
class PoolStatus:
    name: str
    app: str
    alive: int
    processes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SagaStatus:
    name: str
    counts: dict[str, int]
    """Sagas in each state (every state of ``queues.saga_store.STATES``; finished ones
    within the retention)."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    handlers: list[HandlerStatus]
    pools: list[PoolStatus]
    sagas: list[SagaStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"handlers": [asdict(h) for h in self.handlers],
                "pools": [asdict(p) for p in self.pools],
                "sagas": [asdict(s) for s in self.sagas]}


def handler_status(client: Any, record: HandlerRecord, breaker: str | None = None,
                   outcomes: dict[str, int] | None = None) -> HandlerStatus:
    keys = record.keys
    backlog = handler_backlog_sync(client, keys)
    main = backlog.group
    return HandlerStatus(
        name=record.name, stream=record.stream, pool=record.pool, app=record.app,
        group=keys.group, lag=None if main is None else main.lag,
        pending=0 if main is None else main.pending,
        consumers=0 if main is None else main.consumers,
        retry_pending=backlog.retry_pending, delayed=backlog.delayed,
        dead_letters=backlog.dead_letters, breaker=breaker,
        outcomes={kind: (outcomes or {}).get(kind, 0) for kind in outcome_counts.KINDS},
    )


def pool_statuses(client: Any, now_ms: int | None = None) -> list[PoolStatus]:
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    by_pool: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for beat in read_heartbeats_sync(client).values():
        beat["alive"] = now_ms - int(beat.get("seen_at", 0)) <= ALIVE_WITHIN_MS
        by_pool.setdefault((beat.get("app", "?"), beat.get("pool", "?")), []).append(beat)
    return [
        PoolStatus(name=pool, app=app, alive=sum(1 for b in beats if b["alive"]),
                   processes=sorted(beats, key=lambda b: (b.get("host", ""), b.get("slot", 0))))
        for (app, pool), beats in sorted(by_pool.items())
    ]


def breaker_state(client: Any, record: HandlerRecord) -> str | None:
    """The breaker's state as ``status`` shows it (``open (12s)`` while it counts down)."""
    if record.breaker is None:
        return None
    snapshot = read_state_sync(client, record.keys)
    if snapshot.open_until_ms is not None and snapshot.state in ("open", "forced_open"):
        left = max(0.0, (snapshot.open_until_ms - time.time() * 1000) / 1000)
        return f"{snapshot.state} ({left:.0f}s)"
    return snapshot.state


def saga_statuses(client: Any, records: dict[str, HandlerRecord]) -> list[SagaStatus]:
    """Per saga type in the registry, how many sagas are in each state."""
    types = saga_types((r.name, r.stream) for r in records.values())
    return [SagaStatus(name, saga_store.counts_sync(client, t.keys))
            for name, t in types.items()]


def node_of(client: Any, stream: str) -> str | None:
    """The cluster node serving ``stream``'s slot (``host:port``), or None on one Redis."""
    if not is_cluster(client):
        return None
    node = client.get_node_from_key(stream)
    return None if node is None else f"{node.host}:{node.port}"


def collect(client: Any) -> StatusReport:
    records = read_registry_sync(client)
    counts = outcome_counts.read_sync(client)
    handlers = [replace(handler_status(client, r, breaker_state(client, r), counts.get(r.name)),
                        node=node_of(client, r.stream))
                for r in records.values()]
    return StatusReport(handlers, pool_statuses(client), saga_statuses(client, records))
