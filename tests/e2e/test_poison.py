"""Given a message that kills its pool process (SIGKILL) every time it runs, among normal
ones, under ``seawall run`` (the supervisor restarts the pool process each time) with
``max_deliveries=3``: it is delivered exactly three times, then dead-lettered as a
``PoisonMessage`` instead of being delivered again; every other message is handled; and
the pool keeps serving messages published afterwards."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

from e2e.failure_helpers import NO_CLAIM, Lab, PoolRun, Where, where
from e2e.support import E2E, counts, ledger, listed, pending_count, wait_until
from queues.streams import ensure_group, read_group
from workers.context import Context

pytestmark = pytest.mark.slow

POISON = 1_000
MAX_DELIVERIES = 3

APP = """
import signal

app.pool("risky", concurrency=8, claim_after=600)


@app.handler({stream!r}, pool="risky", name={handler!r}, max_deliveries={max_deliveries},
             breaker=None)
async def work(msg: Msg) -> None:
    if msg.n == {poison}:
        sync_redis.rpush(PREFIX + "poison-runs", os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.sleep(0.005)
    await aredis().hincrby(PREFIX + "handled", str(msg.n), 1)
"""


def test_a_message_that_kills_its_process_is_dead_lettered_after_max_deliveries(
    e2e: E2E,
) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("work")
    app_path = e2e.write_app(APP.format(stream=stream, handler=handler, poison=POISON,
                                        max_deliveries=MAX_DELIVERIES))
    dlq = f"seawall:{{{stream}}}:dlq:{handler}"
    handled_key, runs_key = e2e.key("handled"), e2e.key("poison-runs")
    # Given 50 normal messages with one poison message in the middle,
    e2e.app.publish_many(stream, ({"n": n} for n in range(25)))
    poison_id = e2e.app.publish(stream, {"n": POISON})
    e2e.app.publish_many(stream, ({"n": n} for n in range(25, 50)))
    [poison_entry] = [eid.decode() for eid, f in e2e.client.xrange(stream)
                      if f[b"id"].decode() == poison_id]

    # when the app runs under the supervisor,
    run = e2e.run(app_path)

    # then the poison message ends in the dead letters,
    wait_until(lambda: e2e.client.xlen(dlq) == 1, timeout=40, interval=0.1,
               what="the poison message's dead letter", details=run.logs)
    # every other message is handled,
    wait_until(lambda: set(counts(e2e.client, handled_key)) == set(range(50)), timeout=20,
               interval=0.05, what="all 50 normal messages", details=run.logs)
    wait_until(lambda: pending_count(e2e.client, stream, handler) == 0, timeout=10,
               what="the last acks", details=run.logs)
    # after exactly max_deliveries runs, each of which killed a different process.
    runs = listed(e2e.client, runs_key)
    assert len(runs) == MAX_DELIVERIES, runs
    assert len(set(runs)) == MAX_DELIVERIES

    [(_, raw)] = e2e.client.xrange(dlq)
    letter = {k.decode(): v.decode() for k, v in raw.items()}
    assert letter["id"] == poison_id
    assert json.loads(letter["payload"]) == {"n": POISON}
    assert letter["dlq_entry_id"] == poison_entry
    assert letter["dlq_error_type"] == "PoisonMessage"
    assert f"delivered {MAX_DELIVERIES} times" in letter["dlq_error"]
    assert letter["dlq_reason"] == "max deliveries exceeded"
    assert letter["dlq_handler"] == handler

    # The pool is still serving, under the same supervisor: more messages get handled.
    assert run.popen.poll() is None
    [pool_pid] = run.wait_children(1)
    assert str(pool_pid) not in runs, "a fresh process, not one the poison killed"
    e2e.app.publish_many(stream, ({"n": n} for n in range(50, 60)))
    wait_until(lambda: set(counts(e2e.client, handled_key)) == set(range(60)), timeout=10,
               what="the messages published afterwards", details=run.logs)
    wait_until(lambda: pending_count(e2e.client, stream, handler) == 0, timeout=10,
               what="the last acks", details=run.logs)

    # Every message is accounted for: 60 handled (at least once: some were in flight when
    # the poison killed their process), the poison one dead letter, nothing pending,
    # unread, waiting for a retry or dead-lettered by mistake.
    handled = counts(e2e.client, handled_key)
    assert set(handled) == set(range(60)) and POISON not in handled
    where = ledger(e2e.client, stream, handler)
    assert where.published == set(range(60)) | {POISON}
    assert where.done == where.published and not where.pending and not where.unread
    assert e2e.client.xlen(dlq) == 1
    assert e2e.client.xlen(f"seawall:{{{stream}}}:retry:{handler}") == 0
    assert not e2e.client.exists(f"seawall:{{{stream}}}:delayed:{handler}")
    assert run.children() == [pool_pid], "no further crash"
    assert len(listed(e2e.client, runs_key)) == MAX_DELIVERIES

    run.signal(signal.SIGTERM)
    assert run.wait(timeout=15) == 0


# -- recovery of a dead process's own entries, in this process ---------------------------

RECOVERY_DEADLOCK = (
    "runtime bug: workers/recovery.py:57-61 (recover) takes slots for a whole chunk of "
    "once-delivered pending entries before starting any (`while granted < len(chunk): "
    "granted += await consumer.limiter.acquire_up_to(...)`); with more such entries than the "
    "pool's concurrency, it waits forever for slots only those entries would free. The fetch "
    "loop runs recover_own before its first read, so the pool handles nothing at all")


class Order(BaseModel):
    n: int


async def test_a_restarted_pool_recovers_more_pending_entries_than_its_concurrency(
    lab: Lab, aredis: aioredis.Redis,
) -> None:
    lab.app.pool("default", concurrency=4, claim_after=NO_CLAIM)
    stream, name = lab.stream("orders"), lab.name("work")
    handled: Counter[str] = Counter()

    @lab.app.handler(stream, name=name, breaker=None)
    async def work(order: Order, ctx: Context) -> None:
        handled[ctx.message_id] += 1

    keys = lab.keys(name)
    mids = await lab.app.apublish_many(stream, ({"n": n} for n in range(10)))
    # Given a dead process of this pool (same consumer name) that held ten entries,
    await ensure_group(aredis, stream, keys.group)
    await read_group(aredis, keys.group, lab.consumer, [stream], count=10, block_ms=None)
    assert await where(aredis, keys) == Where(pending=dict.fromkeys(mids, 1))

    # when its replacement starts with room for four at a time,
    async with PoolRun(lab.app) as pool:
        # then it works through all ten.
        await pool.until(lambda: set(handled) == set(mids), within=3, what="all ten handled")
        await pool.until(lambda: _nothing_left(aredis, lab, name), within=5, what="the acks")


async def _nothing_left(client: aioredis.Redis, lab: Lab, name: str) -> bool:
    return not (await where(client, lab.keys(name))).everywhere()
