"""Idempotent handlers: a message whose id this handler already completed (its marker is
set) is acked without running. That is how a duplicate by id is absorbed: a follow-up
relayed twice after a crash, a producer that published again under the same id, or an
entry still pending beside its marker. A handler that is not idempotent runs it again
(which is what shows the test can tell the two apart).

The marker is written by the script that acks the message (``commit.lua``), so the two land
together or not at all. The duplicate state is built directly (the entry read into the
group's pending list by the pool's consumer name, the marker set); and end to end, a pool
process running as a Redis user that may not XACK shows that a refused ack takes its
marker with it: the message is still pending, unmarked, and runs again (at least once)."""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel

from e2e.failure_helpers import NO_CLAIM, Lab, PoolRun, Where, where
from e2e.support import E2E, pending_count, wait_until
from queues.keys import HandlerKeys
from queues.streams import ensure_group, read_group
from workers.context import Context

pytestmark = pytest.mark.slow


class Order(BaseModel):
    n: int


def _register(lab: Lab, client: aioredis.Redis, calls: Counter[str]) -> tuple[str, str]:
    """Two handlers on one stream with the same side effect (INCR of a per-message counter):
    one idempotent, one not. Returns their names."""
    stream = lab.stream("payments")
    once, naive = lab.name("charge-once"), lab.name("charge-naive")

    @lab.app.handler(stream, name=once, idempotent=True, breaker=None)
    async def charge_once(order: Order, ctx: Context) -> None:
        calls[once] += 1
        await client.incr(lab.key(f"charged:{once}:{ctx.message_id}"))

    @lab.app.handler(stream, name=naive, breaker=None)
    async def charge_naive(order: Order, ctx: Context) -> None:
        calls[naive] += 1
        await client.incr(lab.key(f"charged:{naive}:{ctx.message_id}"))

    return once, naive


async def _crashed_after_side_effect(lab: Lab, client: aioredis.Redis, mid: str,
                                     handlers: tuple[str, str], consumer: str) -> None:
    """The state a worker named ``consumer`` leaves when it dies after each handler's side
    effect and before the ack: the entry pending (delivered once), the counter at 1, and
    the idempotent handler's done-marker set exactly as the runtime sets it."""
    once, _ = handlers
    for name in handlers:
        keys = lab.keys(name)
        await ensure_group(client, keys.stream, keys.group)
        [envelope] = await read_group(client, keys.group, consumer, [keys.stream], count=1,
                                      block_ms=None)
        assert envelope.message_id == mid
        await client.incr(lab.key(f"charged:{name}:{mid}"))
    spec = lab.app.handlers[once]
    await client.set(spec.keys.done(mid), b"1", nx=True, ex=int(spec.idempotency_ttl))
    for name in handlers:
        assert await where(client, lab.keys(name)) == Where(pending={mid: 1})


# DOUBLE_RUN: how often the handler that is not idempotent runs again is not asserted
# exactly. A restarted pool may run a recovered entry twice (runtime bug,
# workers/recovery.py:80-89, recover_own: after `consumer.drain()` the entries' acks may still
# be queued in the AckBatcher, so the next XPENDING lists them again and they are claimed and
# run once more). An idempotent handler is immune to it; the other one is not.


async def _settled(client: aioredis.Redis, keys: HandlerKeys) -> bool:
    return not (await where(client, keys)).everywhere()


async def _charged(lab: Lab, client: aioredis.Redis, name: str, mid: str) -> int:
    return int(await client.get(lab.key(f"charged:{name}:{mid}")) or 0)


async def test_a_restarted_worker_acks_a_completed_message_without_running_it_again(
    lab: Lab, aredis: aioredis.Redis,
) -> None:
    lab.app.pool("default", claim_after=NO_CLAIM)
    calls: Counter[str] = Counter()
    once, naive = handlers = _register(lab, aredis, calls)
    mid = await lab.app.apublish(lab.streams[0], {"n": 1})
    # Given a worker (this pool's consumer name) that crashed after the side effect and
    # before the ack,
    await _crashed_after_side_effect(lab, aredis, mid, handlers, lab.consumer)

    # when its replacement starts (it takes over its predecessor's pending entries at once),
    async with PoolRun(lab.app) as pool:
        for name in handlers:
            await pool.until(lambda name=name: _settled(aredis, lab.keys(name)), within=10,
                             what=f"{name} to finish the entry")

    # then the idempotent handler acked it without running: the side effect happened once;
    assert calls[once] == 0
    assert await _charged(lab, aredis, once, mid) == 1
    assert await aredis.exists(lab.keys(once).done(mid))
    # the handler that is not idempotent ran it again (at least once more: see DOUBLE_RUN).
    assert calls[naive] >= 1
    assert await _charged(lab, aredis, naive, mid) == 1 + calls[naive]
    for name in handlers:
        assert await where(aredis, lab.keys(name)) == Where()


CLAIM_BUG = (
    "runtime bug: workers/recovery.py:104 (claim_abandoned) reads `reply[1]` of XAUTOCLAIM "
    "... JUSTID, but redis-py 5+ already returns just the list of ids for justid=True; with "
    "one abandoned entry that raises IndexError in the fetch loop, the pool dies "
    "(PoolCrashed) and nothing is taken over after claim_after")


async def test_a_completed_message_taken_over_after_claim_after_is_not_run_again(
    lab: Lab, aredis: aioredis.Redis,
) -> None:
    lab.app.pool("default", claim_after=0.5)
    calls: Counter[str] = Counter()
    once, naive = handlers = _register(lab, aredis, calls)
    mid = await lab.app.apublish(lab.streams[0], {"n": 1})
    # Given another worker (gone for good) that crashed after the side effect, before the ack,
    await _crashed_after_side_effect(lab, aredis, mid, handlers, f"gone-{lab.uid}")

    # when a live pool takes its entries over once they have been idle for claim_after,
    async with PoolRun(lab.app) as pool:
        for name in handlers:
            await pool.until(lambda name=name: _settled(aredis, lab.keys(name)), within=10,
                             what=f"{name} to take the entry over")

    # then the side effect happened once for the idempotent handler, again for the other.
    assert calls[once] == 0 and calls[naive] >= 1
    assert await _charged(lab, aredis, once, mid) == 1
    assert await _charged(lab, aredis, naive, mid) == 1 + calls[naive]
    for name in handlers:
        assert await where(aredis, lab.keys(name)) == Where()


# -- end to end: a real pool process whose ack is lost, SIGKILLed ----------------------

E2E_APP = """
app.pool("pay", concurrency=4, claim_after=600)


@app.handler({stream!r}, pool="pay", name={once!r}, idempotent=True, breaker=None)
async def charge_once(msg: Msg, ctx: Context) -> None:
    await aredis().incr(PREFIX + "charged:once:" + ctx.message_id)


@app.handler({stream!r}, pool="pay", name={naive!r}, breaker=None)
async def charge_naive(msg: Msg, ctx: Context) -> None:
    await aredis().incr(PREFIX + "charged:naive:" + ctx.message_id)
"""


@pytest.fixture
def no_ack_url(sync_redis: redis.Redis, redis_url: str, uid: str) -> Iterator[str]:
    """A Redis user that may do everything but XACK: a pool connected as it completes its
    handlers and sets the done-markers, but every ack it sends is refused."""
    user, password = f"seawall-e2e-noack-{uid}", uuid.uuid4().hex
    sync_redis.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*",
                               "+@all", "-xack")
    try:
        yield redis_url.replace("redis://", f"redis://{user}:{password}@", 1)
    finally:
        sync_redis.execute_command("ACL", "DELUSER", user)


def test_a_refused_ack_takes_its_marker_with_it_and_the_message_runs_again(
    e2e: E2E, no_ack_url: str,
) -> None:
    stream = e2e.stream("payments")
    once, naive = e2e.handler("charge-once"), e2e.handler("charge-naive")
    app_path = e2e.write_app(E2E_APP.format(stream=stream, once=once, naive=naive))
    mid = e2e.app.publish(stream, {"n": 1})
    charged = {name: e2e.key(f"charged:{name}:{mid}") for name in ("once", "naive")}
    marker = HandlerKeys(stream, once).done(mid)

    def count(name: str) -> int:
        return int(e2e.client.get(charged[name]) or 0)

    # Given a pool process that ran both handlers (side effects done) but whose acks are
    # refused by Redis,
    doomed = e2e.pool_process(app_path, "pay", 0, env={"SEAWALL_REDIS_URL": no_ack_url})
    wait_until(lambda: count("once") == count("naive") == 1, timeout=15,
               what="both handlers to run", details=doomed.logs)
    wait_until(lambda: "commands in the ack pipeline failed" in doomed.logs(200), timeout=10,
               what="the acks to be refused", details=doomed.logs)
    # then the idempotent handler's marker did not land without its ack;
    assert not e2e.client.exists(marker)
    # when that process is SIGKILLed,
    doomed.signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    for group in (once, naive):
        rows = e2e.client.xpending_range(stream, group, min="-", max="+", count=10)
        assert [int(r["times_delivered"]) for r in rows] == [1], "still pending, unacked"

    # and a new one starts in its place (same slot, so the same consumer name),
    again = e2e.pool_process(app_path, "pay", 0)
    for group in (once, naive):
        wait_until(lambda group=group: pending_count(e2e.client, stream, group) == 0,
                   timeout=15, what=f"{group} to finish the entry", details=again.logs)

    # then both handlers ran the message again (at least once: nothing recorded it as
    # done), and this time the ack and the marker landed together.
    assert count("once") == 2
    assert count("naive") >= 2
    assert e2e.client.exists(marker)
    again.signal(signal.SIGTERM)
    assert again.wait(timeout=15) == 0
