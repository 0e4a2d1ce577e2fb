"""Claiming: a handler slower than ``claim_after`` keeps its entry (its consumer refreshes
the idle time), so no second consumer ever gets it; an entry whose consumer died is taken
over by a live consumer once it has been idle for ``claim_after``."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from e2e.support import E2E, ledger, listed, pending_count, wait_until

pytestmark = pytest.mark.slow

CLAIM_AFTER = 1.0

APP = """
app.pool("slow", concurrency={concurrency}, processes=2, claim_after={claim_after})


@app.handler({stream!r}, pool="slow", name={handler!r})
async def slow(msg: Msg) -> None:
    r = aredis()
    await r.rpush(PREFIX + "started", f"{{msg.n}}:{{os.getpid()}}")
    await asyncio.sleep(SLEEP)
    await r.rpush(PREFIX + "completed", f"{{msg.n}}:{{os.getpid()}}")
"""


def _runs(e2e: E2E, name: str) -> list[tuple[int, int]]:
    """(message n, pid) of every handler start or completion."""
    return [(int(n), int(pid)) for n, pid in
            (v.split(":") for v in listed(e2e.client, e2e.key(name)))]


def test_a_handler_slower_than_claim_after_is_never_handed_to_another_consumer(
    e2e: E2E,
) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("slow")
    app_path = e2e.write_app(APP.format(stream=stream, handler=handler, concurrency=2,
                                        claim_after=CLAIM_AFTER))
    # Given four messages, each taking 4 s (four times claim_after), on two processes
    # (published first: see test_a_pool_keeps_reading_after_looking_for_abandoned_entries),
    e2e.app.publish_many(stream, ({"n": n} for n in range(4)))
    run = e2e.run(app_path, env={"E2E_SLEEP": "4"})
    pids = set(run.wait_children(2))
    wait_until(lambda: len(_runs(e2e, "started")) == 4, timeout=10,
               what="all four to start", details=run.logs)
    owners = {n: owner for n, (owner, _) in ledger(e2e.client, stream, handler)
              .pending.items()}

    # while they run, each entry stays with its consumer, delivered once, never idle long.
    deadline = time.monotonic() + 15
    while len(_runs(e2e, "completed")) < 4:
        assert time.monotonic() < deadline, run.logs()
        where = ledger(e2e.client, stream, handler)
        for n, (owner, deliveries) in where.pending.items():
            assert (owner, deliveries) == (owners[n], 1), f"message {n} changed hands"
        rows = e2e.client.xpending_range(stream, handler, min="-", max="+", count=10)
        assert all(r["time_since_delivered"] < CLAIM_AFTER * 1000 for r in rows), rows
        assert len(_runs(e2e, "started")) == 4, "no message started a second time"
        time.sleep(0.1)

    # Then each was handled exactly once, by the process that first took it.
    wait_until(lambda: pending_count(e2e.client, stream, handler) == 0, timeout=10,
               what="the acks")
    started, completed = _runs(e2e, "started"), _runs(e2e, "completed")
    assert sorted(started) == sorted(completed)
    assert Counter(n for n, _ in completed) == Counter(range(4))
    assert {pid for _, pid in completed} <= pids
    where = ledger(e2e.client, stream, handler)
    assert where.done == set(range(4)) and not where.pending and not where.unread

    run.signal(signal.SIGTERM)
    assert run.wait(timeout=15) == 0


CLAIM_BUG = (
    "runtime bug: workers/recovery.py:104 (claim_abandoned) reads `reply[1]` of "
    "XAUTOCLAIM ... JUSTID, but redis-py already returns just the list of ids for "
    "justid=True; with no abandoned entry (or one) that raises IndexError in the pool's "
    "fetch loop claim_after/2 s after start: the loop dies (the pool process exits; under "
    "the supervisor it crash-loops), so no pool reads past that point or takes anything over")


def test_entries_of_a_dead_consumer_are_taken_over_after_claim_after(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("slow")
    app_path = e2e.write_app(APP.format(stream=stream, handler=handler, concurrency=4,
                                        claim_after=CLAIM_AFTER))
    # Pool processes without a supervisor, so nothing restarts the one we kill (a
    # restarted slot would take back its own entries at once, not after claim_after).
    doomed = e2e.pool_process(app_path, "slow", 0, env={"E2E_SLEEP": "60"})
    doomed_pid = e2e.wait_pool_ready("slow", 0)
    e2e.app.publish_many(stream, ({"n": n} for n in range(4)))
    wait_until(lambda: len(_runs(e2e, "started")) == 4, timeout=10,
               what="slot 0 to take all four", details=doomed.logs)
    survivor = e2e.pool_process(app_path, "slow", 1, env={"E2E_SLEEP": "0.05"})
    survivor_pid = e2e.wait_pool_ready("slow", 1)

    # Given slot 0 alive and busy: slot 1 takes nothing from it, even past claim_after.
    time.sleep(CLAIM_AFTER * 1.5)
    where = ledger(e2e.client, stream, handler)
    assert where.pending == dict.fromkeys(range(4), (e2e.consumer("slow", 0), 1))
    assert _runs(e2e, "completed") == []

    # When slot 0 dies holding all four,
    doomed.signal(signal.SIGKILL)
    doomed.wait(timeout=5)
    killed_at = time.monotonic()

    # then slot 1 takes them over once they have been idle for claim_after, and handles
    # each once.
    wait_until(lambda: len(_runs(e2e, "completed")) == 4, timeout=CLAIM_AFTER + 4,
               interval=0.02, what="slot 1 to take over", details=e2e.all_logs)
    took = time.monotonic() - killed_at
    # The last refresh came at most a third of claim_after before the kill.
    assert took >= CLAIM_AFTER * 2 / 3 - 0.05, f"taken over after {took:.2f}s"
    wait_until(lambda: pending_count(e2e.client, stream, handler) == 0, timeout=10,
               what="the acks")
    assert sorted(_runs(e2e, "completed")) == [(n, survivor_pid) for n in range(4)]
    assert sorted(_runs(e2e, "started")) == sorted(
        [(n, doomed_pid) for n in range(4)] + [(n, survivor_pid) for n in range(4)])
    where = ledger(e2e.client, stream, handler)
    assert where.done == set(range(4)) and not where.pending and not where.unread

    survivor.signal(signal.SIGTERM)
    assert survivor.wait(timeout=10) == 0


def test_a_pool_keeps_reading_after_looking_for_abandoned_entries(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("slow")
    app_path = e2e.write_app(APP.format(stream=stream, handler=handler, concurrency=4,
                                        claim_after=CLAIM_AFTER))
    pool = e2e.pool_process(app_path, "slow", 0)
    e2e.wait_pool_ready("slow", 0)
    # Given a pool that has been idle long enough to look for abandoned entries twice,
    time.sleep(CLAIM_AFTER * 1.5)

    # when a message arrives, then it is handled.
    e2e.app.publish(stream, {"n": 0})
    wait_until(lambda: _runs(e2e, "completed"), timeout=3, what="the message",
               details=pool.logs)
    wait_until(lambda: pending_count(e2e.client, stream, handler) == 0, timeout=5,
               what="the ack")
    assert ledger(e2e.client, stream, handler).done == {0}
