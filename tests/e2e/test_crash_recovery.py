"""Given a pool busy with a backlog, when its process is SIGKILLed in the middle of a
batch, then the supervisor starts a new process (new pid, same consumer name) which first
takes back the dead one's pending entries: every message is handled at least once, none
is lost, none is left pending, and only the messages that were in flight at the kill
are handled more than once."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest

from e2e.support import E2E, ledger, listed, pending_count, status_of, wait_until
from queues.restarts import read_restarts_sync

pytestmark = pytest.mark.slow

N = 1_500
CONCURRENCY = 20

APP = """
app.pool("crashy", concurrency={concurrency}, claim_after=30)


@app.handler({stream!r}, pool="crashy", name={handler!r})
async def work(msg: Msg) -> None:
    await asyncio.sleep(0.02)
    await aredis().rpush(PREFIX + "handled", f"{{msg.n}}:{{os.getpid()}}")
"""


def test_a_killed_pool_process_is_restarted_and_loses_nothing(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("work")
    app_path = e2e.write_app(APP.format(stream=stream, handler=handler,
                                        concurrency=CONCURRENCY))
    consumer = e2e.consumer("crashy", 0)
    e2e.app.publish_many(stream, ({"n": n} for n in range(N)))
    run = e2e.run(app_path)

    # Given the pool process, found by its heartbeat in `seawall status --json`...
    e2e.wait_pool_ready("crashy")
    [beat] = status_of(e2e.status(), e2e.app_name)
    old_pid = beat["pid"]
    assert run.children() == [old_pid]
    assert beat["capacity"] == CONCURRENCY
    # ...half-way through the backlog, with a batch in flight.
    handled_key = e2e.key("handled")
    wait_until(lambda: e2e.client.llen(handled_key) >= N // 3, timeout=30,
               what="a third of the backlog", details=run.logs)

    restarts_before = read_restarts_sync(e2e.client).get("crashy", 0)
    os.kill(old_pid, signal.SIGKILL)
    in_flight = ledger(e2e.client, stream, handler).pending
    assert in_flight, "the kill must hit entries delivered and not yet acked"
    assert {owner for owner, _ in in_flight.values()} == {consumer}

    # Then a new process replaces it...
    [new_pid] = wait_until(lambda: (kids := run.children()) and kids != [old_pid] and kids,
                           timeout=15, what="the restarted pool process", details=run.logs)
    assert new_pid != old_pid
    # (counted in Redis, where `seawall demo` reads it)
    assert read_restarts_sync(e2e.client).get("crashy", 0) == restarts_before + 1
    # ...and every message ends up handled, with nothing pending.
    wait_until(lambda: {int(v.split(":")[0]) for v in listed(e2e.client, handled_key)}
               == set(range(N)), timeout=60, interval=0.2, what="every message handled",
               details=run.logs)
    wait_until(lambda: pending_count(e2e.client, stream, handler) == 0, timeout=10,
               what="the last acks")

    where = ledger(e2e.client, stream, handler)
    assert where.done == where.published == set(range(N))
    assert where.pending == {} and where.unread == set()
    runs = [tuple(map(int, v.split(":"))) for v in listed(e2e.client, handled_key)]
    times = Counter(n for n, _ in runs)
    assert set(times) == set(range(N))
    assert {pid for _, pid in runs} == {old_pid, new_pid}
    # Only messages the dead process held (delivered, not acked) may be handled again;
    # everything acked before the kill was handled exactly once.
    again = {n for n, c in times.items() if c > 1}
    assert again <= set(in_flight)
    assert all(c == 1 for n, c in times.items() if n not in in_flight)
    # The new process is the one `status` reports.
    assert [b["pid"] for b in status_of(e2e.status(), e2e.app_name)] == [new_pid]

    run.signal(signal.SIGTERM)
    assert run.wait(timeout=15) == 0
