"""One message down its runner against a real Redis: the stack's outcome is settled and
flushed to where it belongs, its slot is freed whatever happened, what a built-in layer
raises or the watchdog's timeout is the message's failure (never the worker's), and a
shutdown leaves the message pending."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel

from queues.envelope import Envelope
from queues.keys import HandlerKeys
from workers.errors import HandlerTimeout
from workers.handler import build_spec
from workers.middleware import Call
from workers.outcome import Kind, Outcome
from workers.runtime.acker import AckBatcher
from workers.runtime.dispatch import WorkerSlot
from workers.runtime.inflight import InFlight
from workers.runtime.limiter import CapacityLimiter
from workers.runtime.policy import poison_outcome
from workers.runtime.runner import Runner
from workers.runtime.settle import Settler
from workers.runtime.stack import build_stack

WITHIN = 1.0


class Order(BaseModel):
    n: int


@pytest.fixture
def keys(uid: str, sync_redis: redis.Redis) -> Iterator[HandlerKeys]:
    handler_keys = HandlerKeys(f"orders-{uid}", f"stock.reserve-{uid}")
    yield handler_keys
    names = list(sync_redis.scan_iter(match=f"*{uid}*", count=1000))
    if names:
        sync_redis.delete(*names)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


async def _not_done(envelope: Envelope) -> bool:
    return False


@dataclass
class Rig:
    """One idempotent handler's runner on a real ack pipeline."""

    client: aioredis.Redis
    keys: HandlerKeys
    executor: ThreadPoolExecutor
    handle: Callable[[Order], Awaitable[None]]
    look_up: Callable[[Envelope], Awaitable[bool]] = _not_done
    heard: list[tuple[str, Outcome]] = field(default_factory=list)

    def __post_init__(self) -> None:
        spec = build_spec(self.handle, self.keys.stream, {
            "name": self.keys.handler, "breaker": None, "idempotent": True})
        self.acker = AckBatcher(self.client, [self.observe])
        settler = Settler(handler=spec.name, stream=spec.stream, keys=self.keys,
                          consumer="c1", acker=self.acker, idempotent=True, marker_ttl=60,
                          retry_due=lambda _: None)
        self.limiter = CapacityLimiter(1)
        self.in_flight = InFlight()
        stack = build_stack(spec, executor=self.executor, timeout=0.05, app_middleware=[],
                            gate=None, diverted=set(), done_at_fetch={},
                            look_up_done=self.look_up)
        self.runner = Runner(name=spec.name, pool="default", stream=spec.stream,
                             stack=stack, settler=settler, limiter=self.limiter,
                             in_flight=self.in_flight, timeout=0.05,
                             policy=spec.retry_policy)

    def observe(self, call: Call, outcome: Outcome) -> None:
        self.heard.append((call.entry_id, outcome))

    async def fetch(self, n: int = 1, **extra: str) -> Envelope:
        """Given a message read by this handler's group, its slot taken, as a fetch does."""
        try:
            await self.client.xgroup_create(self.keys.stream, self.keys.group, id="0",
                                            mkstream=True)
        except redis.ResponseError as exc:
            assert "BUSYGROUP" in str(exc)
        fields = {"payload": json.dumps({"n": n}), "id": f"m{n}", **extra}
        await self.client.xadd(self.keys.stream, fields)  # type: ignore[arg-type]
        [[_, [(raw_id, raw_fields)]]] = await self.client.xreadgroup(
            self.keys.group, "c1", {self.keys.stream: ">"}, count=1)
        assert await self.limiter.acquire_up_to(1) == 1
        self.in_flight.queued(1)
        return Envelope(self.keys.stream, raw_id.decode(), raw_fields)

    async def pending(self) -> int:
        return int((await self.client.xpending(self.keys.stream, self.keys.group))["pending"])

    async def delayed_attempts(self) -> list[str]:
        members = await self.client.zrange(self.keys.delayed, 0, -1)
        return [dict(zip(flat[::2], flat[1::2], strict=True))["attempt"]
                for _, _, _, flat in map(json.loads, members)]

    def freed(self) -> bool:
        return self.limiter.available == 1 and self.in_flight.outstanding == 0


async def test_a_message_is_settled_and_its_slot_freed(
        aredis: aioredis.Redis, keys: HandlerKeys, executor: ThreadPoolExecutor) -> None:
    handled: list[int] = []

    async def handle(order: Order) -> None:
        handled.append(order.n)

    rig = Rig(aredis, keys, executor, handle)
    envelope = await rig.fetch(1)
    worker = WorkerSlot()

    await rig.runner.run(envelope, worker)
    await rig.acker.flush()

    assert handled == [1] and rig.freed()
    assert worker.call is not None and worker.call.entry_id == envelope.entry_id
    assert await rig.pending() == 0
    assert await aredis.get(keys.done("m1")) == b"1"
    assert [o.kind for _, o in rig.heard] == [Kind.OK]


async def test_a_look_up_that_fails_is_the_messages_failure(
        aredis: aioredis.Redis, keys: HandlerKeys, executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None:
        raise AssertionError("not looked up: must not run")

    async def redis_gone(envelope: Envelope) -> bool:
        raise ConnectionError("Redis went away")

    rig = Rig(aredis, keys, executor, handle, redis_gone)
    envelope = await rig.fetch(2)

    # When the idempotency look-up of a message fails,
    await rig.runner.run(envelope, WorkerSlot())
    await rig.acker.flush()

    # then the message failed this attempt and waits for its retry; its slot is free.
    assert rig.freed()
    assert await rig.pending() == 0
    assert await rig.delayed_attempts() == ["2"]
    [(_, outcome)] = rig.heard
    assert (outcome.kind, outcome.error_type) == (Kind.RETRY, "ConnectionError")


async def test_a_timeout_in_the_look_up_is_the_messages_failure_not_a_cancellation(
        aredis: aioredis.Redis, keys: HandlerKeys, executor: ThreadPoolExecutor) -> None:
    started = asyncio.Event()

    async def handle(order: Order) -> None:
        raise AssertionError("not looked up: must not run")

    async def slow_look_up(envelope: Envelope) -> bool:
        started.set()
        await asyncio.Event().wait()  # Redis does not answer in time
        return False

    rig = Rig(aredis, keys, executor, handle, slow_look_up)
    envelope = await rig.fetch(3)
    worker = WorkerSlot()
    task = asyncio.create_task(rig.runner.run(envelope, worker))
    await asyncio.wait_for(started.wait(), WITHIN)

    # When the watchdog times the message out during its look-up,
    assert worker.call is not None
    worker.call.timed_out = True
    task.cancel()
    await asyncio.wait({task}, timeout=WITHIN)

    # then run() returns (its worker lives on) with the message retried for HandlerTimeout.
    assert task.done() and not task.cancelled(), "the timeout escaped run() as a cancel"
    assert task.cancelling() == 0
    await rig.acker.flush()
    assert rig.freed()
    assert await rig.delayed_attempts() == ["2"]
    [(_, outcome)] = rig.heard
    assert outcome.kind is Kind.RETRY and isinstance(outcome.error, HandlerTimeout)


async def test_a_shutdown_cancel_leaves_the_message_pending(
        aredis: aioredis.Redis, keys: HandlerKeys, executor: ThreadPoolExecutor) -> None:
    started = asyncio.Event()

    async def handle(order: Order) -> None:
        started.set()
        await asyncio.Event().wait()

    rig = Rig(aredis, keys, executor, handle)
    envelope = await rig.fetch(4)
    task = asyncio.create_task(rig.runner.run(envelope, WorkerSlot()))
    await asyncio.wait_for(started.wait(), WITHIN)

    # When the pool is cancelled at shutdown (not a timeout),
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WITHIN)
    await rig.acker.flush()

    # then nothing was settled: the message is still pending for the next run; the slot
    # is free.
    assert rig.freed()
    assert await rig.pending() == 1
    assert rig.heard == [] and rig.acker.pending == 0


async def test_a_poison_message_is_dead_lettered_without_running(
        aredis: aioredis.Redis, keys: HandlerKeys, executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None:
        raise AssertionError("poison: must not run")

    rig = Rig(aredis, keys, executor, handle)
    envelope = await rig.fetch(5, attempt="1")

    rig.runner.settle_unrun(envelope, poison_outcome(deliveries=3, max_deliveries=3))
    await rig.acker.flush()

    assert await rig.pending() == 0
    [(_, letter)] = await aredis.xrange(keys.dlq)
    assert (letter[b"id"], letter[b"dlq_reason"]) == (b"m5", b"max deliveries exceeded")
    assert [o.kind for _, o in rig.heard] == [Kind.DEAD_LETTER]


async def test_an_entry_trimmed_away_while_pending_is_just_acked(
        aredis: aioredis.Redis, keys: HandlerKeys, executor: ThreadPoolExecutor) -> None:
    async def handle(order: Order) -> None:
        raise AssertionError("no data: must not run")

    rig = Rig(aredis, keys, executor, handle)
    envelope = await rig.fetch(6)
    trimmed = Envelope(envelope.source, envelope.entry_id, {})

    rig.runner.settle_unrun(trimmed, poison_outcome(deliveries=3, max_deliveries=3))
    await rig.acker.flush()

    assert await rig.pending() == 0
    assert await aredis.xlen(keys.dlq) == 0 and rig.heard == []

