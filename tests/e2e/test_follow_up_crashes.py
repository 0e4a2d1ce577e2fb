"""Follow-ups survive process death as the design says: visible with the ack or never.

Given a step whose pool process is SIGKILLed after its handler returned and before the
ack (a middleware holds the ack), nothing it published is visible; its restart handles the
message again and each follow-up appears exactly once. Given a follow-up bound for a
stream in another hash slot whose process is SIGKILLed between the commit (ack + outbox
entry, one script) and the relay (an observer kills it: observers run after the commit is
confirmed, before the relay is sent), the restarted pool's sweeper relays it from the
outbox, and it is handled once downstream."""

from __future__ import annotations

import os
import signal

import pytest

from e2e.support import E2E, listed, pending_count, wait_until
from queues.envelope import follow_up_id
from queues.keys import outbox
from queues.outbox import RELAY_GRACE_MS

pytestmark = pytest.mark.slow

HOLD_THE_ACK = """
import signal

app.pool("steps", concurrency=4, claim_after=30)


async def hold_first_ack(call, call_next):
    outcome = await call_next(call)
    if await aredis().set(PREFIX + "held", b"1", nx=True):
        # the handler returned; this attempt's ack (and its follow-ups) never leaves
        await aredis().rpush(PREFIX + "returned", str(os.getpid()))
        await asyncio.sleep(3600)
    return outcome


@app.handler({orders!r}, pool="steps", name={handler!r}, middleware=[hold_first_ack],
             breaker=None)
async def charge(msg: Msg, ctx: Context) -> None:
    await aredis().rpush(PREFIX + "ran", str(os.getpid()))
    await ctx.publish({payments!r}, {{"n": msg.n}})
    await ctx.publish({shipments!r}, {{"n": msg.n}})
"""


def test_a_process_killed_before_its_ack_published_nothing_and_its_restart_once(
        e2e: E2E) -> None:
    orders, payments, shipments = (e2e.stream("orders"), e2e.stream("payments"),
                                   e2e.stream("shipments"))
    handler = e2e.handler("charge")
    app_path = e2e.write_app(HOLD_THE_ACK.format(orders=orders, payments=payments,
                                                 shipments=shipments, handler=handler))
    run = e2e.run(app_path)
    mid = e2e.app.publish(orders, {"n": 1})

    # Given the handler returned, having published two follow-ups, and its ack is held,
    [pid] = wait_until(lambda: listed(e2e.client, e2e.key("returned")), timeout=15,
                       what="the handler to return", details=run.logs)
    # then nothing it published is visible, anywhere, and the message is pending;
    assert e2e.client.xlen(payments) == e2e.client.xlen(shipments) == 0
    assert e2e.client.xlen(outbox(orders)) == 0
    assert pending_count(e2e.client, orders, handler) == 1

    # when its process is SIGKILLed,
    os.kill(int(pid), signal.SIGKILL)

    # then the restarted pool handles the message again and commits its follow-ups,
    def settled() -> bool:
        return (len(listed(e2e.client, e2e.key("ran"))) == 2
                and pending_count(e2e.client, orders, handler) == 0
                and e2e.client.xlen(payments) == e2e.client.xlen(shipments) == 1)

    wait_until(settled, timeout=20, what="the second run's ack",
               details=lambda: run.logs() + repr((
                   listed(e2e.client, e2e.key("ran")),
                   e2e.client.xpending_range(orders, handler, "-", "+", 10),
                   e2e.client.xlen(payments), e2e.client.xlen(outbox(orders)))))
    ran = listed(e2e.client, e2e.key("ran"))
    assert ran[0] == pid != ran[1]
    # each exactly once, under the ids derived from the order (the same on both attempts).
    for stream in (payments, shipments):
        [(_, fields)] = e2e.client.xrange(stream)
        assert fields[b"id"].decode() == follow_up_id(mid, handler, stream, 0)
        assert fields[b"causation_id"].decode() == mid
    assert e2e.client.xlen(outbox(orders)) == 0


KILL_BEFORE_THE_RELAY = """
import signal

app.pool("steps", concurrency=4, claim_after=30)


@app.observe
def kill_between_commit_and_relay(call, outcome):
    if outcome.follow_ups and sync_redis.set(PREFIX + "killed", b"1", nx=True):
        sync_redis.rpush(PREFIX + "killed-pid", str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


@app.handler({orders!r}, pool="steps", name={charge!r}, breaker=None)
async def charge(msg: Msg, ctx: Context) -> None:
    await aredis().rpush(PREFIX + "charged", str(msg.n))
    await ctx.publish({payments!r}, {{"n": msg.n}})


@app.handler({payments!r}, pool="steps", name={reserve!r}, breaker=None, idempotent=True)
async def reserve(msg: Msg, ctx: Context) -> None:
    await aredis().rpush(PREFIX + "reserved", ctx.message_id)
"""


def test_a_follow_up_committed_to_the_outbox_is_relayed_after_its_process_died(
        e2e: E2E) -> None:
    orders, payments = e2e.stream("orders"), e2e.stream("payments")
    charge, reserve = e2e.handler("charge"), e2e.handler("reserve")
    app_path = e2e.write_app(KILL_BEFORE_THE_RELAY.format(
        orders=orders, payments=payments, charge=charge, reserve=reserve))
    run = e2e.run(app_path)
    mid = e2e.app.publish(orders, {"n": 1})

    # Given the process was SIGKILLed right after the ack's commit, before the relay,
    wait_until(lambda: listed(e2e.client, e2e.key("killed-pid")), timeout=15,
               what="the kill", details=run.logs)
    # then the order is acked, its follow-up waits in the outbox, not yet on its stream;
    assert pending_count(e2e.client, orders, charge) == 0
    [(_, fields)] = e2e.client.xrange(outbox(orders))
    assert fields[b"seawall:target"].decode() == payments
    assert e2e.client.xlen(payments) == 0

    # and once it is older than the relay grace, the restarted pool's sweeper relays it,
    event_id = follow_up_id(mid, charge, payments, 0)
    wait_until(lambda: listed(e2e.client, e2e.key("reserved")) == [event_id],
               timeout=RELAY_GRACE_MS / 1000 + 15, what="the swept follow-up handled",
               details=run.logs)
    wait_until(lambda: e2e.client.xlen(outbox(orders)) == 0
               and pending_count(e2e.client, payments, reserve) == 0, timeout=5,
               what="the outbox emptied")
    # once, under its own id, with the order handled once.
    [(_, relayed)] = e2e.client.xrange(payments)
    assert relayed[b"id"].decode() == event_id
    assert listed(e2e.client, e2e.key("charged")) == ["1"]
    assert listed(e2e.client, e2e.key("reserved")) == [event_id]
