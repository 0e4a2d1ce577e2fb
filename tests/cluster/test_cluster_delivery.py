"""Delivery and crash recovery on a Redis Cluster: given a pool process handling a backlog
(``seawall run`` on the cluster's URL), when it is SIGKILLed with a batch in flight, the
supervisor starts a new one (same consumer name) which takes back the dead one's pending
entries: every message is handled, only those in flight at the kill more than once, and
nothing is left pending.

(e2e/test_crash_recovery.py tells the same story on one Redis; here the kill is made to
land on a batch in flight by holding the handlers, not by timing, so that a slow machine
cannot let the pool drain the backlog first.)"""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
from e2e.support import E2E, ledger, listed, pending_count, wait_until

from queues.restarts import read_restarts_sync

pytestmark = pytest.mark.slow

N = 600

APP = """
app.pool("crashy", concurrency=20, claim_after=30)


@app.handler({stream!r}, pool="crashy", name={handler!r})
async def work(msg: Msg) -> None:
    while await aredis().exists(PREFIX + "hold"):
        await asyncio.sleep(0.01)
    await aredis().rpush(PREFIX + "handled", f"{{msg.n}}:{{os.getpid()}}")
"""


def test_a_killed_pool_process_is_restarted_and_loses_nothing(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("work")
    consumer = e2e.consumer("crashy", 0)
    run = e2e.run(e2e.write_app(APP.format(stream=stream, handler=handler)))
    old_pid = e2e.wait_pool_ready("crashy", timeout=60)
    e2e.app.publish_many(stream, ({"n": n} for n in range(N)))
    handled_key, hold = e2e.key("handled"), e2e.key("hold")

    # Given the pool half-way through the backlog, with a batch held in flight,
    wait_until(lambda: e2e.client.llen(handled_key) >= N // 3, timeout=60,
               what="a third of the backlog", details=run.logs)
    e2e.client.set(hold, "1")
    wait_until(lambda: len(ledger(e2e.client, stream, handler).pending) >= 20, timeout=30,
               what="a batch in flight", details=run.logs)
    restarts_before = read_restarts_sync(e2e.client).get("crashy", 0)

    # when its process is SIGKILLed,
    os.kill(old_pid, signal.SIGKILL)
    in_flight = ledger(e2e.client, stream, handler).pending
    assert {owner for owner, _ in in_flight.values()} == {consumer}
    e2e.client.delete(hold)

    # then a new process replaces it,
    [new_pid] = wait_until(lambda: (kids := run.children()) and kids != [old_pid] and kids,
                           timeout=30, what="the restarted pool process", details=run.logs)
    assert read_restarts_sync(e2e.client).get("crashy", 0) == restarts_before + 1
    # and every message ends up handled, with nothing pending,
    wait_until(lambda: {int(v.split(":")[0]) for v in listed(e2e.client, handled_key)}
               == set(range(N)), timeout=60, interval=0.2, what="every message handled",
               details=run.logs)
    wait_until(lambda: pending_count(e2e.client, stream, handler) == 0, timeout=20,
               what="the last acks")
    where = ledger(e2e.client, stream, handler)
    assert where.done == where.published == set(range(N))
    runs = [tuple(map(int, v.split(":"))) for v in listed(e2e.client, handled_key)]
    times = Counter(n for n, _ in runs)
    assert {pid for _, pid in runs} <= {old_pid, new_pid}
    # only the messages the dead process held may have run again.
    assert {n for n, c in times.items() if c > 1} <= set(in_flight)

    run.signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 0
