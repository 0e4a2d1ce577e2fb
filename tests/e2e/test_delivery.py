"""Given 10,000 messages on one stream with two handlers, when ``seawall run`` serves them,
then each handler handles every message exactly once, nothing is left pending, and a
SIGTERM stops the whole thing with exit code 0."""

from __future__ import annotations

import signal
import time

import pytest

from e2e.support import E2E, counts, ledger, pending_count, wait_until

pytestmark = pytest.mark.slow

N = 10_000

APP = """
app.pool("main", concurrency=64, claim_after=30)


@app.handler({stream!r}, pool="main", name={first!r})
async def first(msg: Msg) -> None:
    await aredis().hincrby(PREFIX + "first", str(msg.n), 1)


@app.handler({stream!r}, pool="main", name={second!r})
def second(msg: Msg, ctx: Context) -> None:
    assert ctx.stream == {stream!r}
    sync_redis.hincrby(PREFIX + "second", str(msg.n), 1)
"""


def test_every_message_is_handled_once_by_each_handler(e2e: E2E) -> None:
    stream = e2e.stream("orders")
    first, second = e2e.handler("first"), e2e.handler("second")
    app_path = e2e.write_app(APP.format(stream=stream, first=first, second=second))
    # Half before the groups exist (they start at id 0), half while the pool is running.
    e2e.app.publish_many(stream, ({"n": n} for n in range(N // 2)))
    run = e2e.run(app_path)
    e2e.wait_pool_ready("main")
    e2e.app.publish_many(stream, ({"n": n} for n in range(N // 2, N)))

    for name in ("first", "second"):
        wait_until(lambda name=name: e2e.client.hlen(e2e.key(name)) == N, timeout=60,
                   interval=0.2, what=f"{name} to see all {N} messages", details=run.logs)
    for group in (first, second):
        wait_until(lambda group=group: pending_count(e2e.client, stream, group) == 0,
                   timeout=10, what="the last acks")

    for name, group in (("first", first), ("second", second)):
        handled = counts(e2e.client, e2e.key(name))
        assert set(handled) == set(range(N)), "every message reached the handler"
        assert set(handled.values()) == {1}, "and exactly once"
        where = ledger(e2e.client, stream, group)
        assert where.published == set(range(N))
        assert where.pending == {} and where.unread == set()
        assert where.done == set(range(N))

    started = time.monotonic()
    run.signal(signal.SIGTERM)
    assert run.wait(timeout=15) == 0
    assert time.monotonic() - started < 10
    assert run.children() == []
    # Nothing was handled again on the way out.
    assert sum(counts(e2e.client, e2e.key("first")).values()) == N
    assert sum(counts(e2e.client, e2e.key("second")).values()) == N
