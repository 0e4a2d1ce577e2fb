"""Settlement against a real Redis: each kind of outcome, handed to a :class:`Settler` and
flushed by the ack pipeline, leaves the message in exactly one place (acked, in the
delayed set, or in the dead letters), commits the follow-ups of ``ok`` and ``fallback``
only, tells the observers after the flush, and tells the mover when a retry is due."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from queues import outbox
from queues.envelope import Envelope
from queues.keys import HandlerKeys
from workers.context import Context
from workers.errors import NonRetryable, StepAborted
from workers.middleware import Call
from workers.outcome import FollowUp, Kind, Outcome
from workers.runtime.acker import AckBatcher
from workers.runtime.policy import poison_outcome
from workers.runtime.settle import Settler

MARKER_TTL = 60


@pytest.fixture
def keys(uid: str, sync_redis: redis.Redis) -> Iterator[HandlerKeys]:
    handler_keys = HandlerKeys(f"orders-{uid}", f"billing.charge-{uid}")
    yield handler_keys
    # Every key of the test (streams, delayed set, dead letters, outbox, markers, targets)
    # carries the uid.
    names = list(sync_redis.scan_iter(match=f"*{uid}*", count=1000))
    if names:
        sync_redis.delete(*names)


@dataclass
class Harness:
    """One handler's settler on a real ack pipeline, with what it told the outside."""

    client: aioredis.Redis
    keys: HandlerKeys
    idempotent: bool = False
    heard: list[tuple[str, Outcome]] = field(default_factory=list)
    due: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.acker = AckBatcher(self.client, [self.observe])
        self.acker.delete_on_ack(self.keys.retry)  # as the pool does
        self.settler = Settler(handler=self.keys.handler, stream=self.keys.stream,
                               keys=self.keys, consumer="c1", acker=self.acker,
                               idempotent=self.idempotent, marker_ttl=MARKER_TTL,
                               retry_due=self.due.append)

    def observe(self, call: Call, outcome: Outcome) -> None:
        self.heard.append((call.entry_id, outcome))

    async def deliver(self, fields: dict[str, str], *, stream: str | None = None) -> Call:
        """Given a message delivered to this handler's group and not yet acked."""
        source = stream or self.keys.stream
        try:
            await self.client.xgroup_create(source, self.keys.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            assert "BUSYGROUP" in str(exc)
        await self.client.xadd(source, fields)  # type: ignore[arg-type]
        [[_, [(raw_id, raw_fields)]]] = await self.client.xreadgroup(
            self.keys.group, "c1", {source: ">"}, count=1)
        envelope = Envelope(source, raw_id.decode(), raw_fields)
        return Call(self.keys.handler, "default", self.keys.stream, envelope, time.monotonic())

    async def pending(self, stream: str | None = None) -> int:
        info = await self.client.xpending(stream or self.keys.stream, self.keys.group)
        return int(info["pending"])

    async def delayed(self) -> list[tuple[str, str, dict[str, str], int]]:
        """(source, entry id, fields, due ms) of each member of the delayed set."""
        out = []
        for member, score in await self.client.zrange(self.keys.delayed, 0, -1,
                                                      withscores=True):
            version, source, entry_id, flat = json.loads(member)
            assert version == 1
            out.append((source, entry_id, dict(zip(flat[::2], flat[1::2], strict=True)),
                        int(score)))
        return out

    async def dead_letters(self) -> list[dict[bytes, bytes]]:
        return [fields for _, fields in await self.client.xrange(self.keys.dlq)]

    async def outbox(self) -> int:
        return int(await self.client.xlen(self.keys.outbox))


def _fields(n: int = 1, **extra: str) -> dict[str, str]:
    return {"payload": json.dumps({"n": n}), "id": f"m{n}", "attempt": "1", **extra}


def _same_slot_stream(stream: str, prefix: str) -> str:
    """A brace-free stream name that hashes to ``stream``'s slot (commit.lua XADDs to it
    directly, no outbox)."""
    wanted = key_slot(stream.encode())
    for i in range(1_000_000):
        name = f"{prefix}-{i}"
        if key_slot(name.encode()) == wanted:
            return name
    raise AssertionError("no stream name in the slot")


def _stage(call: Call, stream: str, payload: dict[str, int], *, fallback: bool = False
           ) -> tuple[FollowUp, ...]:
    """What a handler's ``ctx.publish_sync`` stages on the call, taken as Invoke does."""
    ctx = Context(call, call.handler, call.stream, call.envelope, fallback=fallback)
    ctx.publish_sync(stream, payload)
    return call.take_staged()


async def _read(client: aioredis.Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await client.xrange(stream)]


# -- ok ------------------------------------------------------------------------------------


async def test_ok_acks_the_message_and_the_observer_hears_after_the_flush(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    call = await h.deliver(_fields())

    # When a plain ok is settled,
    h.settler.settle(call, Outcome.ok())
    # then nothing has happened before the flush,
    assert await h.pending() == 1 and h.heard == []
    await h.acker.flush()
    # and after it the message is acked, nowhere else, and the observer heard it once.
    assert await h.pending() == 0
    assert await h.delayed() == [] and await h.dead_letters() == []
    assert await aredis.exists(keys.done("m1")) == 0
    assert h.heard == [(call.entry_id, Outcome.ok())]
    assert h.due == []


async def test_ok_commits_its_follow_ups_with_the_ack_and_relays_the_other_slots(
        aredis: aioredis.Redis, keys: HandlerKeys, uid: str) -> None:
    h = Harness(aredis, keys)
    near = _same_slot_stream(keys.stream, f"audit-{uid}")
    far = f"payments-{uid}"
    assert key_slot(far.encode()) != key_slot(keys.stream.encode())
    call = await h.deliver(_fields(7))
    ctx = Context(call, call.handler, call.stream, call.envelope)
    near_id = ctx.publish_sync(near, {"audit": 7})
    far_id = ctx.publish_sync(far, {"charge": 7})
    outcome = Outcome.ok(call.take_staged())

    # When the ok with two follow-ups is settled and flushed once,
    h.settler.settle(call, outcome)
    await h.acker.flush()
    # then the ack and the same-slot follow-up landed together; the other slot's waits in
    # the outbox,
    assert await h.pending() == 0
    [audit] = await _read(aredis, near)
    assert audit[b"id"] == near_id.encode()
    assert await _read(aredis, far) == []
    assert await h.outbox() == 1
    assert h.heard == [(call.entry_id, outcome)]
    # and the next flush relays it, the one after empties the outbox (once Redis said the
    # relay was written).
    await h.acker.flush()
    [charge] = await _read(aredis, far)
    assert charge[b"id"] == far_id.encode()
    assert json.loads(charge[b"payload"]) == {"charge": 7}
    assert charge[b"correlation_id"] == b"m7" and charge[b"causation_id"] == b"m7"
    assert await h.outbox() == 1 and h.acker.pending == 1
    await h.acker.flush()
    assert await h.outbox() == 0
    assert h.acker.pending == 0
    assert len(await _read(aredis, far)) == 1
    assert len(h.heard) == 1  # the relay is no second settlement


async def test_a_follow_up_redis_refuses_to_relay_stays_in_the_outbox_not_lost(
        aredis: aioredis.Redis, keys: HandlerKeys, uid: str) -> None:
    h = Harness(aredis, keys)
    far = f"payments-{uid}"
    call = await h.deliver(_fields(8))
    follow_ups = _stage(call, far, {"charge": 8})
    # Given a target Redis refuses to write to (a key of another type there),
    await aredis.set(far, "not a stream")

    # when the message's ok is settled and every flush has run,
    h.settler.settle(call, Outcome.ok(follow_ups))
    for _ in range(3):
        await h.acker.flush()

    # the message is acked and its follow-up waits in the outbox (for the sweeper), not
    # deleted without having been written,
    assert await h.pending() == 0
    assert await aredis.type(far) == b"string"
    assert await h.outbox() == 1
    assert h.acker.pending == 0
    # and once the target can be written, a sweep past the grace relays it.
    await aredis.delete(far)
    [(outbox_id, _)] = await aredis.xrange(keys.outbox)
    late = int(outbox_id.split(b"-")[0]) + outbox.RELAY_GRACE_MS + 1
    assert await outbox.sweep(aredis, keys.stream, now_ms=late) == outbox.Swept(1)
    [charge] = await _read(aredis, far)
    assert charge[b"id"] == follow_ups[0].message_id.encode()
    assert await h.outbox() == 0


async def test_ok_of_an_idempotent_handler_writes_its_completion_marker_with_the_ack(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys, idempotent=True)
    call = await h.deliver(_fields(3))

    h.settler.settle(call, Outcome.ok())
    await h.acker.flush()

    assert await h.pending() == 0
    assert await aredis.get(keys.done("m3")) == b"1"
    assert MARKER_TTL - 5 < await aredis.ttl(keys.done("m3")) <= MARKER_TTL
    assert [o.kind for _, o in h.heard] == [Kind.OK]


async def test_ok_of_a_retried_message_acks_and_deletes_it_from_the_retry_stream(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    call = await h.deliver(_fields(attempt="2"), stream=keys.retry)

    h.settler.settle(call, Outcome.ok())
    await h.acker.flush()

    assert await h.pending(keys.retry) == 0
    assert await aredis.xlen(keys.retry) == 0


# -- skipped -------------------------------------------------------------------------------


async def test_skipped_acks_and_writes_nothing(aredis: aioredis.Redis,
                                               keys: HandlerKeys) -> None:
    h = Harness(aredis, keys, idempotent=True)
    call = await h.deliver(_fields(4))

    h.settler.settle(call, Outcome.skipped())
    await h.acker.flush()

    assert await h.pending() == 0
    assert await h.delayed() == [] and await h.dead_letters() == [] and await h.outbox() == 0
    assert await aredis.exists(keys.done("m4")) == 0  # it was not completed this time
    assert h.heard == [(call.entry_id, Outcome.skipped())]


# -- fallback ------------------------------------------------------------------------------


async def test_fallback_acks_and_commits_the_fallbacks_follow_ups_but_no_marker(
        aredis: aioredis.Redis, keys: HandlerKeys, uid: str) -> None:
    h = Harness(aredis, keys, idempotent=True)
    degraded = f"degraded-{uid}"
    call = await h.deliver(_fields(5))
    outcome = Outcome.fallback(_stage(call, degraded, {"later": 5}, fallback=True))

    h.settler.settle(call, outcome)
    await h.acker.flush()
    await h.acker.flush()  # the relay, if the target is in another slot
    await h.acker.flush()  # and its outbox entry deleted, once written

    assert await h.pending() == 0
    [event] = await _read(aredis, degraded)
    assert json.loads(event[b"payload"]) == {"later": 5}
    assert event[b"causation_id"] == b"m5"
    assert await h.outbox() == 0
    # The handler did not complete it: a later delivery must still run the handler.
    assert await aredis.exists(keys.done("m5")) == 0
    assert await h.delayed() == [] and await h.dead_letters() == []
    assert h.heard == [(call.entry_id, outcome)]


# -- parked --------------------------------------------------------------------------------


async def test_parked_waits_in_the_delayed_set_on_the_same_attempt_until_retry_at(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    call = await h.deliver(_fields(6, **{"x-tenant": "acme"}))
    retry_at = int(time.time() * 1000) + 60_000

    # When a message read just before its breaker opened is parked,
    h.settler.settle(call, Outcome.parked(retry_at))
    assert h.due == []
    await h.acker.flush()

    # then it is acked and waits in the delayed set until retry_at, its attempt unchanged,
    # no failure time invented for it, its origin kept,
    assert await h.pending() == 0
    [(source, entry_id, fields, score)] = await h.delayed()
    assert (source, entry_id, score) == (keys.stream, call.entry_id, retry_at)
    assert fields["attempt"] == "1"
    assert "first_failed_at" not in fields
    assert fields["origin_entry_id"] == call.entry_id
    assert {fields[k] for k in ("payload", "id", "x-tenant")} == {'{"n": 6}', "m6", "acme"}
    assert await h.dead_letters() == []
    # and the mover was told when it is due, the observer what became of it.
    assert h.due == [retry_at]
    assert [o.kind for _, o in h.heard] == [Kind.PARKED]


async def test_a_parked_retry_keeps_its_attempt_and_first_failure(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    call = await h.deliver(_fields(attempt="3", first_failed_at="1700000000000",
                                   origin_entry_id="5-0"), stream=keys.retry)
    retry_at = int(time.time() * 1000) + 1000

    h.settler.settle(call, Outcome.parked(retry_at))
    await h.acker.flush()

    [(source, _, fields, score)] = await h.delayed()
    assert (source, score) == (keys.retry, retry_at)
    assert (fields["attempt"], fields["first_failed_at"], fields["origin_entry_id"]) == (
        "3", "1700000000000", "5-0")
    assert await aredis.xlen(keys.retry) == 0  # acked and deleted from the retry stream


# -- retry ---------------------------------------------------------------------------------


async def test_retry_waits_in_the_delayed_set_as_the_next_attempt(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    call = await h.deliver(_fields(8))
    retry_at = int(time.time() * 1000) + 2000

    before = int(time.time() * 1000)
    h.settler.settle(call, Outcome.retry(ConnectionError("flaky"), retry_at))
    after = int(time.time() * 1000)
    await h.acker.flush()

    assert await h.pending() == 0
    [(source, entry_id, fields, score)] = await h.delayed()
    assert (source, entry_id, score) == (keys.stream, call.entry_id, retry_at)
    assert fields["attempt"] == "2"
    assert before <= int(fields["first_failed_at"]) <= after
    assert fields["origin_entry_id"] == call.entry_id
    assert fields["id"] == "m8"
    assert h.due == [retry_at]
    [(_, heard)] = h.heard
    assert (heard.kind, heard.error_type) == (Kind.RETRY, "ConnectionError")


async def test_a_second_retry_keeps_the_first_failure_and_leaves_the_retry_stream(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    call = await h.deliver(_fields(9, attempt="2", first_failed_at="1700000000000",
                                   origin_entry_id="5-0"), stream=keys.retry)
    retry_at = int(time.time() * 1000) + 4000

    h.settler.settle(call, Outcome.retry(ConnectionError("still flaky"), retry_at))
    await h.acker.flush()

    [(source, entry_id, fields, score)] = await h.delayed()
    assert (source, entry_id, score) == (keys.retry, call.entry_id, retry_at)
    assert (fields["attempt"], fields["first_failed_at"], fields["origin_entry_id"]) == (
        "3", "1700000000000", "5-0")
    assert await h.pending(keys.retry) == 0
    assert await aredis.xlen(keys.retry) == 0
    assert h.due == [retry_at]


# -- dead letter ---------------------------------------------------------------------------


def _raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as exc:
        return exc


async def test_an_abort_outside_a_saga_step_is_a_dead_letter_and_heard_as_one(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    # Given a handler that is no saga step and raised StepAborted by hand,
    h = Harness(aredis, keys)
    call = await h.deliver(_fields(11))
    error = _raised(StepAborted("no saga here"))

    h.settler.settle(call, Outcome.aborted(error, "no saga here"))
    await h.acker.flush()

    # then there is no saga to compensate: the message is a dead letter, counted as one.
    assert await h.pending() == 0
    [letter] = await h.dead_letters()
    assert letter[b"dlq_error_type"] == b"StepAborted"
    assert letter[b"dlq_reason"] == b"no saga here"
    assert [(o.kind, o.error) for _, o in h.heard] == [(Kind.DEAD_LETTER, error)]


async def test_dead_letter_moves_the_message_with_its_reason_error_and_traceback(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    call = await h.deliver(_fields(10, **{"x-tenant": "acme"}))
    error = _raised(NonRetryable("no such order"))

    before = int(time.time() * 1000)
    h.settler.settle(call, Outcome.dead_letter(error, "non-retryable: NonRetryable"))
    await h.acker.flush()

    assert await h.pending() == 0
    assert await h.delayed() == []
    [letter] = await h.dead_letters()
    # The original fields, kept for an exact replay,
    assert {k: letter[k] for k in (b"payload", b"id", b"attempt", b"x-tenant")} == {
        b"payload": b'{"n": 10}', b"id": b"m10", b"attempt": b"1", b"x-tenant": b"acme"}
    # and why, where and when it failed.
    assert letter[b"dlq_reason"] == b"non-retryable: NonRetryable"
    assert letter[b"dlq_error_type"] == b"NonRetryable"
    assert letter[b"dlq_error"] == b"no such order"
    traceback = letter[b"dlq_traceback"].decode()
    assert "_raised" in traceback and "NonRetryable: no such order" in traceback
    assert letter[b"dlq_handler"] == keys.handler.encode()
    assert letter[b"dlq_stream"] == keys.stream.encode()
    assert letter[b"dlq_entry_id"] == call.entry_id.encode()
    assert letter[b"dlq_attempts"] == b"1"
    assert letter[b"dlq_consumer"] == b"c1"
    assert int(letter[b"dlq_failed_at"]) >= before
    assert letter[b"dlq_first_failed_at"] == letter[b"dlq_failed_at"]  # first failure
    assert h.due == []
    assert [(o.kind, o.error) for _, o in h.heard] == [(Kind.DEAD_LETTER, error)]


async def test_a_poison_message_from_the_retry_stream_is_dead_lettered_and_deleted(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    call = await h.deliver(_fields(11, attempt="3", first_failed_at="1700000000000",
                                   origin_entry_id="5-0"), stream=keys.retry)

    h.settler.settle(call, poison_outcome(deliveries=4, max_deliveries=4))
    await h.acker.flush()

    assert await aredis.xlen(keys.retry) == 0
    [letter] = await h.dead_letters()
    assert letter[b"dlq_reason"] == b"max deliveries exceeded"
    assert letter[b"dlq_error_type"] == b"PoisonMessage"
    assert (letter[b"dlq_attempts"], letter[b"dlq_first_failed_at"],
            letter[b"dlq_entry_id"]) == (b"3", b"1700000000000", b"5-0")


async def test_a_dead_letter_without_an_error_records_its_reason(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    call = await h.deliver(_fields(12))

    h.settler.settle(call, Outcome(Kind.DEAD_LETTER, reason="rejected by an operator"))
    await h.acker.flush()

    [letter] = await h.dead_letters()
    assert letter[b"dlq_reason"] == b"rejected by an operator"
    assert (letter[b"dlq_error_type"], letter[b"dlq_error"]) == (
        b"RuntimeError", b"rejected by an operator")


async def test_a_dead_letter_whose_entry_was_trimmed_meanwhile_keeps_its_fields(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    call = await h.deliver(_fields(13, **{"x-tenant": "acme"}))
    kept = await h.deliver(_fields(14))
    # Given an entry trimmed from its stream while pending and another one still in it,
    await aredis.xdel(keys.stream, call.entry_id)
    error = _raised(NonRetryable("no such order"))

    h.settler.settle(call, Outcome.dead_letter(error, "non-retryable: NonRetryable"))
    h.settler.settle(kept, Outcome.dead_letter(error, "non-retryable: NonRetryable"))
    await h.acker.flush()
    # (the script copies a dead letter's fields from its entry: the trimmed one stays
    # pending, and goes again with the next flush, its fields sent from the pool's memory)
    assert [f[b"id"] for f in await h.dead_letters()] == [b"m14"]
    assert await h.pending() == 1
    await h.acker.flush()

    # both are dead letters with their original fields, nothing pending, counted once.
    letters = {f[b"id"]: f for f in await h.dead_letters()}
    assert set(letters) == {b"m13", b"m14"}
    assert letters[b"m13"][b"x-tenant"] == b"acme"
    assert letters[b"m13"][b"payload"] == b'{"n": 13}'
    assert letters[b"m13"][b"dlq_entry_id"] == call.entry_id.encode()
    assert letters[b"m13"][b"dlq_error"] == letters[b"m14"][b"dlq_error"] == b"no such order"
    assert await h.pending() == 0
    assert await aredis.hgetall(keys.dlq_counts) == {b"NonRetryable": b"2"}


async def test_a_flood_of_invalid_payloads_says_what_is_wrong_without_the_inputs(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    from pydantic import BaseModel, ValidationError

    from workers.retry import gives_up_at_once

    class Order(BaseModel):
        n: int

    def invalid(payload: bytes) -> Outcome:
        try:
            Order.model_validate_json(payload)
        except ValidationError as exc:
            verdict = gives_up_at_once(exc)
            assert verdict is not None
            return Outcome.dead_letter(exc, verdict.reason)
        raise AssertionError("must fail")

    h = Harness(aredis, keys)
    # Given many messages of one wrong schema and one that is not JSON,
    calls = [await h.deliver({"payload": f'{{"n": "#{i}"}}', "id": f"m{i}"}) for i in range(30)]
    junk = await h.deliver({"payload": "not json", "id": "junk"})

    for i, call in enumerate(calls):
        h.settler.settle(call, invalid(f'{{"n": "#{i}"}}'.encode()))
    h.settler.settle(junk, invalid(b"not json"))
    await h.acker.flush()

    # then each is a dead letter whose error names the field and what is wrong with it
    # (the payload, kept whole, has the input), with the whole traceback,
    letters = {f[b"id"].decode(): f for f in await h.dead_letters()}
    assert len(letters) == 31
    for i in range(30):
        letter = letters[f"m{i}"]
        assert letter[b"payload"] == f'{{"n": "#{i}"}}'.encode()
        assert letter[b"dlq_error_type"] == b"ValidationError"
        assert letter[b"dlq_reason"] == b"invalid payload: validation failed"
        assert letter[b"dlq_error"] == (
            b"1 validation error for Order\nn\n  Input should be a valid integer, unable to "
            b"parse string as an integer [type=int_parsing]")
        assert letter[b"dlq_traceback"].startswith(b"Traceback (most recent call last):")
        assert letter[b"dlq_traceback"].endswith(letter[b"dlq_error"] + b"\n")
    assert letters["junk"][b"dlq_reason"] == b"undecodable payload: not valid JSON"
    assert letters["junk"][b"dlq_error"].startswith(
        b"1 validation error for Order\n  Invalid JSON: ")
    assert await h.pending() == 0
    assert await aredis.hgetall(keys.dlq_counts) == {b"ValidationError": b"31"}


# -- several at once -----------------------------------------------------------------------


async def test_one_flush_settles_every_kind_each_in_its_one_place(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    h = Harness(aredis, keys)
    calls = [await h.deliver(_fields(n)) for n in range(5)]
    retry_at = int(time.time() * 1000) + 5000
    outcomes = [Outcome.ok(), Outcome.skipped(), Outcome.parked(retry_at),
                Outcome.retry(TimeoutError("slow"), retry_at),
                Outcome.dead_letter(ValueError("bad"), "not retried by policy: ValueError")]

    for call, outcome in zip(calls, outcomes, strict=True):
        h.settler.settle(call, outcome)
    await h.acker.flush()

    assert await h.pending() == 0
    delayed = {fields["id"]: fields["attempt"] for _, _, fields, _ in await h.delayed()}
    assert delayed == {"m2": "1", "m3": "2"}
    assert [letter[b"id"] for letter in await h.dead_letters()] == [b"m4"]
    assert h.heard == [(c.entry_id, o) for c, o in zip(calls, outcomes, strict=True)]
    assert h.due == [retry_at, retry_at]
