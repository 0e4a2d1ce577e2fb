"""The ack pipeline against a real Redis (a private server: one test flushes its scripts):
an ack commits its completion marker and its follow-ups atomically (``commit.lua``), also
when Redis has lost its scripts (a restart); follow-ups bound for another slot go through
the outbox and are relayed by the next flush; observers hear of settled messages only
after the flush that settled them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from queues.commit import Pending
from queues.connection import connect
from queues.envelope import Envelope
from queues.keys import HandlerKeys, outbox
from workers.cli.private_redis import PrivateRedis, redis_server_path
from workers.middleware import Call
from workers.outcome import Outcome
from workers.runtime.acker import AckBatcher

pytestmark = pytest.mark.skipif(redis_server_path() is None, reason="needs redis-server")


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateRedis]:
    with PrivateRedis() as private:
        yield private


@pytest.fixture
async def client(server: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    redis_client = connect(server.url)
    yield redis_client
    await redis_client.flushall()
    await redis_client.aclose()


async def _pending_message(client: aioredis.Redis, keys: HandlerKeys) -> str:
    await client.xgroup_create(keys.stream, keys.group, id="0", mkstream=True)
    await client.xadd(keys.stream, {"payload": "{}"})
    [[_, [(entry_id, _)]]] = await client.xreadgroup(keys.group, "c1", {keys.stream: ">"})
    return str(entry_id.decode())


async def test_the_marker_and_the_ack_leave_in_one_flush(client: aioredis.Redis) -> None:
    keys = HandlerKeys("orders", "stock.reserve")
    entry_id = await _pending_message(client, keys)
    acker = AckBatcher(client)

    acker.commit(keys.stream, keys.outbox, keys.group, Pending(entry_id, keys.done("m1")),
                 marker_ttl=60)
    assert acker.pending == 1
    await acker.flush()

    assert acker.pending == 0
    assert 50 < await client.ttl(keys.done("m1")) <= 60
    assert (await client.xpending(keys.stream, keys.group))["pending"] == 0


async def test_a_marker_never_lands_without_its_ack_when_redis_lost_its_scripts(
        client: aioredis.Redis) -> None:
    keys = HandlerKeys("orders", "stock.reserve")
    acker = AckBatcher(client)
    acker.commit(keys.stream, keys.outbox, keys.group, Pending("1-0", keys.done("m0")),
                 marker_ttl=60)
    await acker.flush()
    # Given Redis lost its scripts (as after a restart),
    await client.script_flush()
    entry_id = await _pending_message(client, keys)
    # when a marker and its ack are flushed,
    acker.commit(keys.stream, keys.outbox, keys.group, Pending(entry_id, keys.done("m1")),
                 marker_ttl=60)
    await acker.flush()
    # then after the first flush both or neither landed,
    pending = (await client.xpending(keys.stream, keys.group))["pending"]
    assert (pending, bool(await client.exists(keys.done("m1")))) in {(1, False), (0, True)}
    # and the next flush (the scripts loaded again) lands them together.
    await acker.flush()
    assert (await client.xpending(keys.stream, keys.group))["pending"] == 0
    assert await client.exists(keys.done("m1"))
    assert acker.pending == 0


async def test_follow_ups_to_another_slot_wait_in_the_outbox_until_the_next_flush(
        client: aioredis.Redis) -> None:
    keys = HandlerKeys("orders", "billing.charge")
    entry_id = await _pending_message(client, keys)
    acker = AckBatcher(client)
    events = [("payments", {"id": f"e{i}", "payload": "{}"}) for i in range(2)]

    # When an ack commits two follow-ups bound for a stream in another slot,
    acker.commit(keys.stream, keys.outbox, keys.group, Pending(entry_id, None, events))
    await acker.flush()
    # then the ack and the outbox entries landed together, the target has nothing yet,
    assert (await client.xpending(keys.stream, keys.group))["pending"] == 0
    assert await client.xlen(outbox("orders")) == 2
    assert await client.xlen("payments") == 0
    # and the next flush relays them, in order; the one after empties the outbox, once
    # Redis has said they were written.
    assert acker.pending == 2
    await acker.flush()
    assert [f[b"id"] for _, f in await client.xrange("payments")] == [b"e0", b"e1"]
    assert acker.pending == 2
    await acker.flush()
    assert await client.xlen(outbox("orders")) == 0
    assert acker.pending == 0


async def test_closing_commits_relays_and_empties_the_outbox(client: aioredis.Redis) -> None:
    keys = HandlerKeys("orders", "billing.charge")
    entry_id = await _pending_message(client, keys)
    acker = AckBatcher(client)
    acker.start()

    # Given an ack whose follow-up is bound for another slot, still queued at shutdown,
    acker.commit(keys.stream, keys.outbox, keys.group,
                 Pending(entry_id, None, [("payments", {"id": "e0", "payload": "{}"})]))
    # when the pool closes its ack pipeline,
    await acker.close()

    # the ack, the relay and the outbox's clean-up all went out: nothing is left for the
    # sweeper to relay a second time.
    assert (await client.xpending(keys.stream, keys.group))["pending"] == 0
    assert [f[b"id"] for _, f in await client.xrange("payments")] == [b"e0"]
    assert await client.xlen(outbox("orders")) == 0
    assert acker.pending == 0


async def test_follow_ups_of_an_entry_someone_else_acked_are_not_written(
        client: aioredis.Redis) -> None:
    keys = HandlerKeys("orders", "billing.charge")
    entry_id = await _pending_message(client, keys)
    await client.xack(keys.stream, keys.group, entry_id)
    acker = AckBatcher(client)

    acker.commit(keys.stream, keys.outbox, keys.group,
                 Pending(entry_id, keys.done("m1"), [("payments", {"id": "e0"})]))
    await acker.flush()
    await acker.flush()

    assert await client.xlen(outbox("orders")) == 0
    assert await client.xlen("payments") == 0
    assert not await client.exists(keys.done("m1"))


async def test_observers_hear_of_a_settled_message_after_its_flush(
        client: aioredis.Redis) -> None:
    keys = HandlerKeys("orders", "billing.charge")
    entry_id = await _pending_message(client, keys)
    heard: list[tuple[str, str]] = []

    def broken(call: Call, outcome: Outcome) -> None:
        raise RuntimeError("observer bug")

    def listening(call: Call, outcome: Outcome) -> None:
        heard.append((call.entry_id, outcome.kind.value))

    acker = AckBatcher(client, [broken, listening])
    call = Call("billing.charge", "default", "orders",
                Envelope(keys.stream, entry_id, {b"payload": b"{}"}), 0.0)
    acker.ack(keys.stream, keys.group, entry_id)
    acker.settled(call, Outcome.ok())
    assert heard == []
    await acker.flush()
    assert heard == [(entry_id, "ok")]
