"""Failover under load on the local cluster: while a producer keeps publishing and a pool
of two processes keeps handling, (1) the replica of the master holding the busy stream
takes over (``CLUSTER FAILOVER``), (2) the stream's slot migrates to another master
(``CLUSTER SETSLOT`` / ``MIGRATE``, the way ``redis-cli --cluster reshard`` moves it,
with ASK redirections meanwhile). In both cases every message published is handled, none
is left pending, and the pools followed the stream to its new node without a restart.

Marked ``failover``: CI runs the bounded form; ``SEAWALL_LONG_FAILOVER=1`` runs more
messages over a longer time."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from e2e.support import E2E, wait_until

from cluster.load import APP, MESSAGES, Producer, every_message_handled, handled
from cluster.local_cluster import LocalCluster, Node

pytestmark = [pytest.mark.slow, pytest.mark.failover]


def _under_load(e2e: E2E, cluster: LocalCluster,
                operation: Callable[[str], tuple[Node, Node]]) -> None:
    stream, handler = e2e.stream("busy"), e2e.handler("work")
    run = e2e.run(e2e.write_app(APP.format(stream=stream, handler=handler)))
    pids = {e2e.wait_pool_ready("busy", 0, timeout=60), e2e.wait_pool_ready("busy", 1,
                                                                            timeout=60)}
    producer = Producer(e2e.redis_url, stream)
    producer.start()
    # Given messages flowing (a fifth of them handled),
    wait_until(lambda: len(handled(e2e)) >= MESSAGES // 5, timeout=60, interval=0.1,
               what="the load to run", details=run.logs)
    # when the operation moves the stream while the producer and the pools keep going,
    before, after = operation(stream)
    assert before.port != after.port
    assert cluster.master_of(stream).port == after.port
    moved_at = len(producer.published)
    published = producer.finish()
    assert moved_at < len(published), "the load must go on after the move"
    # then every message published is handled, nothing is left pending,
    times = every_message_handled(e2e, run, stream, handler, published)
    assert set(times) == set(published) == set(range(MESSAGES))
    # (a message whose ack was cut by the move may run again: at least once, never lost)
    assert sum(times.values()) - len(times) <= MESSAGES // 10
    # and the same pool processes did it all (they followed the stream, no restart).
    assert set(run.children()) == pids
    run.signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 0


def test_a_replica_taking_over_the_busy_streams_master_loses_nothing(
        e2e: E2E, cluster: LocalCluster) -> None:
    _under_load(e2e, cluster, cluster.failover)


def test_migrating_the_busy_streams_slot_loses_nothing(e2e: E2E, cluster: LocalCluster
                                                       ) -> None:
    def migrate(stream: str) -> tuple[Node, Node]:
        time.sleep(0.5)
        return cluster.migrate_slot(stream)

    _under_load(e2e, cluster, migrate)
