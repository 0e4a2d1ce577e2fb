"""Behind Sentinel (one primary, one replica, three sentinels), the primary is killed
(SIGKILL) under load: the sentinels promote the replica, and the pools of ``seawall run``,
given a ``redis+sentinel://`` URL, follow the new primary on their own reconnect backoff,
without a restart. Every message the producer published (confirmed by a replica: WAIT) is
handled, nothing is left pending, and ``seawall status`` reads the new primary. The killed
node comes back empty and the sentinels make it the new primary's replica."""

from __future__ import annotations

import signal
import time

import pytest
from cluster.load import APP, MESSAGES, Producer, every_message_handled, handled
from e2e.support import E2E, wait_until

from sentinel.local_sentinel import LocalSentinel

pytestmark = [pytest.mark.slow, pytest.mark.failover]


def test_the_primary_killed_under_load_loses_nothing_and_pools_follow_the_new_one(
        e2e: E2E, sentinel: LocalSentinel) -> None:
    stream, handler = e2e.stream("busy"), e2e.handler("work")
    run = e2e.run(e2e.write_app(APP.format(stream=stream, handler=handler)))
    pids = {e2e.wait_pool_ready("busy", 0, timeout=60),
            e2e.wait_pool_ready("busy", 1, timeout=60)}
    producer = Producer(sentinel.url, stream, replicas=1)
    producer.start()
    # Given messages flowing through the primary,
    wait_until(lambda: len(handled(e2e)) >= MESSAGES // 5, timeout=60, interval=0.1,
               what="the load to run", details=run.logs)
    old = sentinel.primary

    # when it is killed,
    sentinel.kill(old)
    killed_at = time.monotonic()
    # then the sentinels promote the replica,
    wait_until(lambda: sentinel.primary_port() == sentinel.replica, timeout=30,
               interval=0.1, what="the sentinels to promote the replica")
    promoted_after = time.monotonic() - killed_at
    # (the old node comes back empty, as the new primary's replica)
    sentinel.restart_as_replica(old)
    published = producer.finish()
    # and every message published is handled by the same pool processes, none pending.
    times = every_message_handled(e2e, run, stream, handler, published)
    assert set(times) == set(published) == set(range(MESSAGES))
    assert set(run.children()) == pids
    # The CLI, given the same URL, reads the new primary.
    [status] = [h for h in e2e.status()["handlers"] if h["name"] == handler]
    assert status["pending"] == 0 and status["node"] is None
    print(f"promoted {promoted_after:.1f}s after the kill; "
          f"{sum(times.values()) - len(times)} messages handled twice")
    run.signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 0
