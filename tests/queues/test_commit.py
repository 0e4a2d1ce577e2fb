"""``commit.lua`` and the outbox against the real Redis: an ack writes its follow-ups and
completion marker with it, same-slot targets directly, other slots through the outbox; an
entry no longer pending commits nothing; the sweeper relays what was never relayed, once
it is older than the grace, and one sweeper at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from queues import keys as key_names
from queues import outbox
from queues.commit import Pending, commit, pack_fields, slot_of
from queues.keys import HandlerKeys


@pytest.fixture
async def keys(aredis: aioredis.Redis, uid: str) -> AsyncIterator[HandlerKeys]:
    k = HandlerKeys(f"orders-{uid}", f"billing.charge-{uid}")
    yield k
    await aredis.delete(k.stream, k.retry, k.outbox, key_names.outbox_sweep_lease(k.stream),
                        k.done("m1"), k.done("m2"), f"payments-{uid}")


async def _pending(client: aioredis.Redis, keys: HandlerKeys, n: int) -> list[str]:
    await client.xgroup_create(keys.stream, keys.group, id="0", mkstream=True)
    for i in range(n):
        await client.xadd(keys.stream, {"payload": "{}", "id": f"m{i + 1}"})
    [[_, entries]] = await client.xreadgroup(keys.group, "c1", {keys.stream: ">"})
    return [e.decode() for e, _ in entries]


async def test_an_ack_commits_same_slot_follow_ups_directly_and_others_via_the_outbox(
        aredis: aioredis.Redis, keys: HandlerKeys, uid: str) -> None:
    payments = f"payments-{uid}"
    assert slot_of(payments) != slot_of(keys.stream)
    [first, second] = await _pending(aredis, keys, 2)

    acked, relays = await commit(aredis, source=keys.stream, outbox=keys.outbox,
                                 group=keys.group, marker_ttl=60, items=[
        Pending(first, keys.done("m1"), [(keys.stream, {"id": "f1", "payload": "{}"}),
                                          (payments, {"id": "f2", "payload": "{}"})]),
        Pending(second, None, [(payments, {"id": "f3", "payload": "{}"})]),
    ])

    # Both acked, the marker set, the same-slot follow-up on its stream, the other two in
    # the outbox with their target, in order, and nothing on the target yet.
    assert acked == 2
    assert (await aredis.xpending(keys.stream, keys.group))["pending"] == 0
    assert 50 < await aredis.ttl(keys.done("m1")) <= 60
    assert [f[b"id"] for _, f in await aredis.xrange(keys.stream)][-1] == b"f1"
    assert [(r.target, r.outbox) for r in relays] == [(payments, keys.outbox)] * 2
    boxed = await aredis.xrange(keys.outbox)
    assert [(f[outbox.TARGET].decode(), f[outbox.FIELDS]) for _, f in boxed] == [
        (payments, pack_fields({"id": "f2", "payload": "{}"})),
        (payments, pack_fields({"id": "f3", "payload": "{}"}))]
    assert await aredis.xlen(payments) == 0

    # The relay writes them to the target and empties the outbox.
    assert await outbox.relay(aredis, relays) == (relays, [])
    assert [f for _, f in await aredis.xrange(payments)] == [
        {b"id": b"f2", b"payload": b"{}"}, {b"id": b"f3", b"payload": b"{}"}]
    assert await outbox.backlog(aredis, keys.stream) == 0


async def test_an_entry_no_longer_pending_commits_nothing(
        aredis: aioredis.Redis, keys: HandlerKeys, uid: str) -> None:
    [entry] = await _pending(aredis, keys, 1)
    await aredis.xack(keys.stream, keys.group, entry)

    acked, relays = await commit(aredis, source=keys.stream, outbox=keys.outbox,
                                 group=keys.group, items=[
        Pending(entry, keys.done("m1"), [(f"payments-{uid}", {"id": "f1"})])])

    assert (acked, relays) == (0, [])
    assert await aredis.xlen(keys.outbox) == 0
    assert not await aredis.exists(keys.done("m1"))


async def test_the_sweeper_relays_only_entries_older_than_the_grace_one_sweeper_at_a_time(
        aredis: aioredis.Redis, keys: HandlerKeys, uid: str) -> None:
    payments = f"payments-{uid}"
    [entry] = await _pending(aredis, keys, 1)
    await commit(aredis, source=keys.stream, outbox=keys.outbox, group=keys.group,
                 items=[Pending(entry, None, [(payments, {"id": "f1", "payload": "{}"})])])
    [(boxed_id, _)] = await aredis.xrange(keys.outbox)
    committed_ms = int(boxed_id.decode().split("-")[0])

    # A sweep within the grace leaves it to the process that committed it;
    assert (await outbox.sweep(aredis, keys.stream, now_ms=committed_ms + 10)).relayed == 0
    assert await aredis.xlen(payments) == 0
    # one past the grace relays it, unless another sweeper holds the lease;
    late = committed_ms + outbox.RELAY_GRACE_MS + 1
    assert (await outbox.sweep(aredis, keys.stream, now_ms=late)).relayed == 0  # lease held
    await aredis.delete(key_names.outbox_sweep_lease(keys.stream))
    assert await outbox.sweep(aredis, keys.stream, now_ms=late) == outbox.Swept(1)
    # and then it is on its stream once, and gone from the outbox.
    assert [f[b"id"] for _, f in await aredis.xrange(payments)] == [b"f1"]
    assert await aredis.xlen(keys.outbox) == 0


def test_packed_fields_survive_any_bytes() -> None:
    fields = {"payload": '{"a": "x:1:y"}', "h": b"\x00:\xff\n", "": ""}
    packed = pack_fields(fields)
    assert packed == b'7:payload14:{"a": "x:1:y"}1:h4:\x00:\xff\n0:0:'


async def test_follow_ups_with_any_bytes_arrive_as_they_were_staged(
        aredis: aioredis.Redis, keys: HandlerKeys, uid: str) -> None:
    payments = f"payments-{uid}"
    fields = {b"payload": b'{"note": "12:34 \xe2\x9c\x93"}', b"h:1": b"\x00\xff:9:",
              b"empty": b""}
    [entry] = await _pending(aredis, keys, 1)

    _, relays = await commit(aredis, source=keys.stream, outbox=keys.outbox, group=keys.group,
                             items=[Pending(entry, None, [(keys.stream, fields),
                                                          (payments, fields)])])
    await outbox.relay(aredis, relays)

    # Written directly (same slot) and relayed (other slot), the fields are intact.
    assert (await aredis.xrange(keys.stream))[-1][1] == fields
    assert [f for _, f in await aredis.xrange(payments)] == [fields]


async def test_a_relay_redis_refuses_stays_in_the_outbox_until_a_sweep_can_write_it(
        aredis: aioredis.Redis, keys: HandlerKeys, uid: str) -> None:
    payments, refunds = f"payments-{uid}", f"refunds-{uid}"
    [entry] = await _pending(aredis, keys, 1)
    _, relays = await commit(aredis, source=keys.stream, outbox=keys.outbox, group=keys.group,
                             items=[Pending(entry, None, [
                                 (payments, {"id": "f1", "payload": "{}"}),
                                 (refunds, {"id": "f2", "payload": "{}"})])])
    committed_ms = int((await aredis.xrange(keys.outbox))[0][0].split(b"-")[0])
    # Given a target Redis refuses to write to (a key of another type there),
    await aredis.set(payments, "not a stream")
    try:
        # the relay writes the other one and deletes only that one from the outbox;
        written, refused = await outbox.relay(aredis, relays)
        assert [r.target for r in written] == [refunds]
        assert [(r.target, "WRONGTYPE" in str(e)) for r, e in refused] == [(payments, True)]
        assert [f[b"id"] for _, f in await aredis.xrange(refunds)] == [b"f2"]
        assert [f[outbox.TARGET] for _, f in await aredis.xrange(keys.outbox)] == [
            payments.encode()]
        # a sweep while it is still refused leaves it there,
        late = committed_ms + outbox.RELAY_GRACE_MS + 1
        swept = await outbox.sweep(aredis, keys.stream, now_ms=late)
        assert (swept.relayed, [r.target for r, _ in swept.refused]) == (0, [payments])
        assert await outbox.backlog(aredis, keys.stream) == 1
    finally:
        await aredis.delete(payments)
    # and once the target can be written, the next sweep relays it and empties the outbox.
    await aredis.delete(key_names.outbox_sweep_lease(keys.stream))
    assert await outbox.sweep(aredis, keys.stream, now_ms=late) == outbox.Swept(1)
    assert [f[b"id"] for _, f in await aredis.xrange(payments)] == [b"f1"]
    assert await outbox.backlog(aredis, keys.stream) == 0
    await aredis.delete(refunds)
