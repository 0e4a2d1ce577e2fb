"""Given a pool working through a backlog on a redis-server of the test's own (append-only
file, fsync at every write), when that Redis stops in the middle and comes back two
seconds later on the same port with its data, then the pool process rides it out (same
supervisor, same pool process, reconnected with backoff), every message is handled at
least once, none is lost, nothing is left pending, and SIGTERM still exits 0.

The handler records what it handled in the main test Redis, which stays up, so that
nothing it did during the outage is lost with the Redis under test."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from e2e.failure_helpers import DurableRedis
from e2e.support import E2E, alive, counts, ledger, pending_count, wait_until
from workers.app import App
from workers.cli.private_redis import redis_server_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(redis_server_path() is None, reason="needs redis-server on PATH"),
]

N = 200
OUTAGE = 2.0

APP = """
app.pool("steady", concurrency=2, claim_after=600)


@app.handler({stream!r}, pool="steady", name={handler!r})
async def work(msg: Msg) -> None:
    await asyncio.sleep(0.02)
    await aredis().hincrby(PREFIX + "handled", str(msg.n), 1)
"""


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = DurableRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_a_pool_rides_out_a_redis_restart_and_loses_nothing(
    e2e: E2E, durable_redis: DurableRedis,
) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("work")
    app_path = e2e.write_app(APP.format(stream=stream, handler=handler))
    handled_key = e2e.key("handled")
    private: redis.Redis = durable_redis.client()
    producer = App(e2e.app_name, redis_url=durable_redis.url)
    try:
        # Given 200 messages on the Redis under test and a pool working through them,
        producer.publish_many(stream, ({"n": n} for n in range(N)))
        run = e2e.run(app_path, "--redis-url", durable_redis.url)
        [pool_pid] = run.wait_children(1)
        wait_until(lambda: len(counts(e2e.client, handled_key)) >= N // 4, timeout=20,
                   what="a quarter of the backlog", details=run.logs)
        assert f"127.0.0.1:{durable_redis.port}" in run.logs(), "the pool uses that Redis"

        # when that Redis stops half-way,
        durable_redis.stop()
        stopped_at = time.monotonic()
        handled_before = len(counts(e2e.client, handled_key))
        assert handled_before < N, "stopped before the end of the backlog"
        wait_until(lambda: "Redis unreachable" in run.logs(200), timeout=10,
                   what="the pool to notice", details=run.logs)
        # stays down for two seconds (the pool keeps trying to reach it meanwhile),
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped_at)))
        assert alive(pool_pid) and run.children() == [pool_pid], run.logs()
        # and comes back on the same port with its append-only file,
        durable_redis.start()
        assert private.xlen(stream) == N, "the stream survived the restart"

        # then the same pool process reconnects and handles the rest,
        wait_until(lambda: set(counts(e2e.client, handled_key)) == set(range(N)),
                   timeout=30, interval=0.1, what="every message handled",
                   details=run.logs)
        wait_until(lambda: pending_count(private, stream, handler) == 0, timeout=15,
                   what="nothing pending", details=lambda: str(
                       ledger(private, stream, handler).pending) + "\n" + run.logs())
        assert run.popen.poll() is None, "the supervisor never stopped"
        assert run.children() == [pool_pid], "the pool process was never restarted"
        assert "pool process died" not in run.logs(400)

        # Every message was handled at least once; none lost, pending or unread.
        handled = counts(e2e.client, handled_key)
        assert set(handled) == set(range(N)) and min(handled.values()) >= 1
        where = ledger(private, stream, handler)
        assert where.published == set(range(N))
        assert where.done == set(range(N)) and not where.pending and not where.unread
        assert private.xlen(f"seawall:{{{stream}}}:dlq:{handler}") == 0

        run.signal(signal.SIGTERM)
        assert run.wait(timeout=15) == 0
    finally:
        producer.close()
        private.close()
