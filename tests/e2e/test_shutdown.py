"""Stopping: the first SIGTERM stops fetching and lets running handlers finish within the
grace period; messages not started stay pending or unread for the next run; a second
SIGTERM cancels what still runs, at once."""

from __future__ import annotations

import signal
import time

import pytest

from e2e.support import E2E, ledger, listed, pending_count, wait_until

pytestmark = pytest.mark.slow

N = 40
CONCURRENCY = 4

APP = """
app.pool("slow", concurrency={concurrency}, claim_after=30)


@app.handler({stream!r}, pool="slow", name={handler!r})
async def slow(msg: Msg) -> None:
    r = aredis()
    await r.rpush(PREFIX + "started", msg.n)
    try:
        await asyncio.sleep(SLEEP)
    except asyncio.CancelledError:
        await asyncio.shield(r.rpush(PREFIX + "cancelled", msg.n))
        raise
    await r.rpush(PREFIX + "completed", msg.n)
"""


def _ints(e2e: E2E, name: str) -> list[int]:
    return [int(v) for v in listed(e2e.client, e2e.key(name))]


def test_sigterm_lets_running_handlers_finish_and_leaves_the_rest(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("slow")
    app_path = e2e.write_app(APP.format(stream=stream, handler=handler,
                                        concurrency=CONCURRENCY))
    e2e.app.publish_many(stream, ({"n": n} for n in range(N)))
    grace = 10.0
    run = e2e.run(app_path, "--grace", str(grace), env={"E2E_SLEEP": "2"})

    # Given four handlers running (each for 2 s)...
    wait_until(lambda: len(_ints(e2e, "started")) == CONCURRENCY, timeout=20,
               what="the first handlers to start", details=run.logs)
    in_flight = set(_ints(e2e, "started"))
    # ...when the supervisor is told to stop,
    stopped_at = time.monotonic()
    run.signal(signal.SIGTERM)

    # then it exits 0 once they have finished, well within the grace period.
    assert run.wait(timeout=grace + 5) == 0
    took = time.monotonic() - stopped_at
    assert took < grace
    assert set(_ints(e2e, "completed")) == in_flight, run.logs()
    assert _ints(e2e, "cancelled") == []
    assert set(_ints(e2e, "started")) == in_flight, "nothing new started after the SIGTERM"
    # Every message is somewhere: completed (acked), pending, or never read.
    where = ledger(e2e.client, stream, handler)
    assert where.done == in_flight
    assert len(where.done) + len(where.pending) + len(where.unread) == N
    assert where.done | set(where.pending) | where.unread == set(range(N))

    # When a second run starts, it handles all the rest, and nothing twice.
    again = e2e.run(app_path, env={"E2E_SLEEP": "0.01"})
    wait_until(lambda: len(_ints(e2e, "completed")) >= N, timeout=30, interval=0.1,
               what="the second run to finish the rest", details=again.logs)
    wait_until(lambda: pending_count(e2e.client, stream, handler) == 0, timeout=10,
               what="the last acks")
    completed = _ints(e2e, "completed")
    assert sorted(completed) == list(range(N))
    where = ledger(e2e.client, stream, handler)
    assert where.done == set(range(N)) and not where.pending and not where.unread
    again.signal(signal.SIGTERM)
    assert again.wait(timeout=15) == 0


def test_a_second_sigterm_cancels_at_once(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("slow")
    app_path = e2e.write_app(APP.format(stream=stream, handler=handler, concurrency=2))
    e2e.app.publish_many(stream, ({"n": n} for n in range(4)))
    run = e2e.run(app_path, "--grace", "60", env={"E2E_SLEEP": "60"})
    wait_until(lambda: len(_ints(e2e, "started")) == 2, timeout=20,
               what="two handlers to start", details=run.logs)
    in_flight = set(_ints(e2e, "started"))

    stopped_at = time.monotonic()
    run.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert run.popen.poll() is None, "the first SIGTERM waits for the running handlers"
    run.signal(signal.SIGTERM)

    assert run.wait(timeout=10) == 0
    assert time.monotonic() - stopped_at < 5
    # The running handlers were cancelled, not completed, and their messages stay pending
    # (for the next run); the others were never read.
    assert set(_ints(e2e, "cancelled")) == in_flight, run.logs()
    assert _ints(e2e, "completed") == []
    where = ledger(e2e.client, stream, handler)
    assert set(where.pending) == in_flight
    assert where.unread == set(range(4)) - in_flight
    assert where.done == set()
