"""``/metrics``: the supervisor's totals as Prometheus metric families.

A custom collector (prometheus-client's ``Collector`` protocol) over a :class:`Snapshot`
taken under the hub's lock at each scrape; no prometheus-client metric object is updated
anywhere, so nothing costs anything between scrapes. Metric names and labels:

=============================================================  ================================
``seawall_messages_processed_total{stream,handler,pool,outcome}``  settled messages by outcome
``seawall_process_duration_seconds{handler,pool}``              histogram: decode + handler
``seawall_handler_exceptions_total{handler,error_type}``        failed attempts by error type
``seawall_messages_in_flight{pool}``, ``seawall_pool_capacity{pool}``  the bulkhead
``seawall_pool_processes{pool}``                                live pool processes
``seawall_event_loop_lag_seconds{pool}``                        the longest recent loop stall
``seawall_circuit_breaker_state{handler}``                      0 closed, 1 half-open, 2 open
``seawall_circuit_breaker_transitions_total{handler,from,to}``  changes heard by the pool
``seawall_pool_restarts_total{pool}``                           processes restarted after dying
``seawall_redis_reconnects_total{pool}``                        waits for Redis to come back
``seawall_consumer_group_lag{stream,handler}``                  read from Redis (fleet-wide)
``seawall_consumer_group_pending{stream,handler}``              read from Redis
``seawall_consumer_group_oldest_pending_age_seconds{stream,handler}``  read from Redis
``seawall_retry_delayed{handler}``, ``seawall_dead_letters{handler}``   read from Redis
``seawall_sagas{saga,state}``                                  read from Redis
=============================================================  ================================

No label carries a message id or a saga id. The saga counts are a gauge (finished sagas
leave their state's index after the retention), so they are not named ``_total``, which
Prometheus keeps for counters (``promtool check metrics`` refuses a gauge named so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from workers.observability.counting import BUCKETS, SUM
from workers.observability.fleet import FleetFigures


@dataclass(slots=True)
class Snapshot:
    """Copies of the totals at one moment (taken under the hub's lock)."""

    processed: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    durations: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    exceptions: dict[tuple[str, str], int] = field(default_factory=dict)
    transitions: dict[tuple[str, str, str], int] = field(default_factory=dict)
    reconnects: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    pools: dict[str, dict[str, float]] = field(default_factory=dict)
    breakers: dict[str, int] = field(default_factory=dict)
    fleet: FleetFigures | None = None


def _bucket_label(bound: float) -> str:
    return repr(float(bound))


_LES = [_bucket_label(b) for b in BUCKETS] + ["+Inf"]


def families(snap: Snapshot) -> list[Metric]:
    """Every metric family of one snapshot."""
    out: list[Metric] = []
    processed = CounterMetricFamily(
        "seawall_messages_processed", "Messages settled, by what became of them.",
        labels=["stream", "handler", "pool", "outcome"])
    for labels, n in sorted(snap.processed.items()):
        processed.add_metric(list(labels), n)
    out.append(processed)

    durations = HistogramMetricFamily(
        "seawall_process_duration_seconds",
        "Seconds a message's decoding and handler (or fallback) took, when it ran.",
        labels=["handler", "pool"])
    for (handler, pool), counts in sorted(snap.durations.items()):
        cumulative, buckets = 0.0, []
        for le, count in zip(_LES, counts[:SUM], strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        durations.add_metric([handler, pool], buckets, sum_value=counts[SUM])
    out.append(durations)

    exceptions = CounterMetricFamily(
        "seawall_handler_exceptions", "Failed attempts, by handler and exception type.",
        labels=["handler", "error_type"])
    for labels2, n in sorted(snap.exceptions.items()):
        exceptions.add_metric(list(labels2), n)
    out.append(exceptions)

    gauges = {
        "in_flight": GaugeMetricFamily("seawall_messages_in_flight",
                                       "Messages taken by a pool and not yet settled.",
                                       labels=["pool"]),
        "capacity": GaugeMetricFamily("seawall_pool_capacity",
                                      "A pool's concurrency over its live processes.",
                                      labels=["pool"]),
        "processes": GaugeMetricFamily("seawall_pool_processes",
                                       "Live processes of a pool.", labels=["pool"]),
        "lag": GaugeMetricFamily("seawall_event_loop_lag_seconds",
                                 "The longest event-loop stall of a pool's processes in "
                                 "their last report.", labels=["pool"]),
    }
    for pool, values in sorted(snap.pools.items()):
        for name, family in gauges.items():
            family.add_metric([pool], values[name])
    out += gauges.values()

    state = GaugeMetricFamily("seawall_circuit_breaker_state",
                              "A handler's circuit breaker: 0 closed, 1 half-open, 2 open.",
                              labels=["handler"])
    for handler, value in sorted(snap.breakers.items()):
        state.add_metric([handler], value)
    out.append(state)
    transitions = CounterMetricFamily(
        "seawall_circuit_breaker_transitions",
        "Changes of a circuit breaker's state, as heard by the pool running its handler.",
        labels=["handler", "from", "to"])
    for labels3, n in sorted(snap.transitions.items()):
        transitions.add_metric(list(labels3), n)
    out.append(transitions)

    restarts = CounterMetricFamily("seawall_pool_restarts",
                                   "Pool processes restarted after they died or were stuck.",
                                   labels=["pool"])
    for pool, n in sorted(snap.restarts.items()):
        restarts.add_metric([pool], n)
    out.append(restarts)
    reconnects = CounterMetricFamily("seawall_redis_reconnects",
                                     "Waits of a pool's loops for Redis to come back.",
                                     labels=["pool"])
    for pool, n in sorted(snap.reconnects.items()):
        reconnects.add_metric([pool], n)
    out.append(reconnects)
    out += _fleet_families(snap.fleet)
    return out


def _fleet_families(fleet: FleetFigures | None) -> Iterable[Metric]:
    if fleet is None:
        return []
    lag = GaugeMetricFamily("seawall_consumer_group_lag",
                            "Entries of a stream not yet delivered to a handler's group.",
                            labels=["stream", "handler"])
    pending = GaugeMetricFamily("seawall_consumer_group_pending",
                                "Entries delivered to a handler and not acked, plus its "
                                "redeliveries waiting on its retry stream.",
                                labels=["stream", "handler"])
    oldest = GaugeMetricFamily("seawall_consumer_group_oldest_pending_age_seconds",
                               "Age of a handler's oldest pending entry.",
                               labels=["stream", "handler"])
    delayed = GaugeMetricFamily("seawall_retry_delayed",
                                "Retries of a handler waiting for their time.",
                                labels=["handler"])
    dead = GaugeMetricFamily("seawall_dead_letters", "A handler's dead letters.",
                             labels=["handler"])
    for h in fleet.handlers:
        if h.lag is not None:
            lag.add_metric([h.stream, h.handler], h.lag)
        pending.add_metric([h.stream, h.handler], h.pending)
        oldest.add_metric([h.stream, h.handler], h.oldest_pending_age or 0.0)
        delayed.add_metric([h.handler], h.delayed)
        dead.add_metric([h.handler], h.dead_letters)
    sagas = GaugeMetricFamily("seawall_sagas",
                              "Sagas in each state (finished ones within their retention).",
                              labels=["saga", "state"])
    for (saga, state), n in sorted(fleet.sagas.items()):
        sagas.add_metric([saga, state], n)
    return [lag, pending, oldest, delayed, dead, sagas]


class SnapshotCollector:
    """A prometheus-client collector: each scrape takes a fresh snapshot."""

    def __init__(self, take: Callable[[], Snapshot]) -> None:
        self._take = take

    def collect(self) -> Iterable[Metric]:
        return families(self._take())
