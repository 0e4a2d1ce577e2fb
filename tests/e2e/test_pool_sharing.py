"""Handlers sharing one pool share its concurrency limit fairly: a handler whose stream is
busy is not starved by pool-mates polling idle streams. An idle handler waits on Redis
(XREADGROUP BLOCK) for one message holding no slot and takes a slot for what it gets, so
a pool's idle handlers may outnumber its slots and still each wait for work at the same
time; the read after a batch takes its slots first, and a fetcher that gives its slots
back cannot take them again ahead of one already waiting. An idle handler whose breaker
is half-open still asks for every probe permit."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

from e2e.failure_helpers import Lab, PoolRun, Where, where
from queues import breaker_store
from workers import CircuitBreaker
from workers.context import Context

pytestmark = pytest.mark.slow


class Order(BaseModel):
    n: int


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 4}


async def test_a_busy_handler_is_not_starved_by_pool_mates_on_idle_streams(
        lab: Lab, aredis: aioredis.Redis) -> None:
    busy_stream = lab.stream("orders")
    busy = lab.name("busy")
    idle = [lab.name(f"idle{i}") for i in range(3)]
    handled: Counter[str] = Counter()

    # Given a pool of 4 slots whose handlers are one busy handler and three handlers whose
    # streams stay empty (each of them blocks on Redis up to a second per read),
    @lab.app.handler(busy_stream, name=busy, breaker=None)
    async def work(order: Order, ctx: Context) -> None:
        handled[ctx.message_id] += 1

    for name in idle:
        @lab.app.handler(lab.stream(name.split(".")[1]), name=name, breaker=None)
        async def nothing(order: Order) -> None:
            raise AssertionError("no message was published to this stream")

    # when 300 messages wait on the busy handler's stream,
    published = await lab.app.apublish_many(busy_stream, (Order(n=n) for n in range(300)))
    started = time.monotonic()
    async with PoolRun(lab.app) as pool:
        # then it handles them all promptly (a starved handler would wait for its pool-mates'
        # one-second reads, or forever),
        await pool.until(lambda: len(handled) == len(published), within=5,
                         what="every message handled")
        elapsed = time.monotonic() - started
        await pool.until(lambda: _done(aredis, lab, busy), within=5, what="every ack")
    assert elapsed < 3.0, elapsed
    # once each, and nothing is left anywhere.
    assert set(handled) == set(published) and set(handled.values()) == {1}


async def test_idle_handlers_outnumbering_the_slots_all_wait_for_work_at_once(
        lab: Lab, aredis: aioredis.Redis) -> None:
    names = [lab.name(f"h{i}") for i in range(10)]
    streams = [lab.stream(name.split(".")[1]) for name in names]
    handled: Counter[str] = Counter()

    # Given a pool of 4 slots with 10 handlers whose streams are empty,
    for stream, name in zip(streams, names, strict=True):
        @lab.app.handler(stream, name=name, breaker=None)
        async def work(order: Order, ctx: Context) -> None:
            handled[ctx.message_id] += 1

    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: len(pool.pool.consumers) == len(names), within=5,
                         what="every handler to start")
        await asyncio.sleep(0.3)
        # every one of them waits for work holding no slot (holding one each, four waited
        # on Redis and six for a slot, taking turns a second at a time),
        assert pool.pool.statistics().in_flight == 0
        assert pool.pool.statistics().waiting == 0
        # and a message published to each is handled once, without waiting for a turn.
        published = [await lab.app.apublish(stream, {"n": n})
                     for n, stream in enumerate(streams)]
        await pool.until(lambda: len(handled) == len(published), within=5,
                         what="every message handled")
        for name in names:
            await pool.until(lambda name=name: _done(aredis, lab, name), within=5,
                             what="every ack")
    assert set(handled) == set(published) and set(handled.values()) == {1}


async def _done(client: aioredis.Redis, lab: Lab, handler: str) -> bool:
    return await where(client, lab.keys(handler)) == Where()


async def test_half_open_probes_of_an_idle_handler_run_side_by_side(
        lab: Lab, aredis: aioredis.Redis) -> None:
    stream, name = lab.stream("quotes"), lab.name("quote")
    running: list[str] = []
    most = 0
    release = asyncio.Event()

    @lab.app.handler(stream, name=name, breaker=CircuitBreaker(half_open_calls=3))
    async def quote(order: Order, ctx: Context) -> None:
        nonlocal most
        running.append(ctx.message_id)
        most = max(most, len(running))
        await release.wait()
        running.remove(ctx.message_id)

    # Given an idle handler (its reads wait for work holding one slot) whose breaker an
    # operator forced open for a moment, and which has heard of it,
    async with PoolRun(lab.app) as pool:
        [consumer] = await pool.until(lambda: pool.pool.consumers, within=5,
                                      what="the pool to start")
        assert consumer.gate is not None
        await breaker_store.force_open(aredis, lab.keys(name), duration_ms=1500)
        await pool.until(lambda: consumer.gate is not None and consumer.gate.blocking,
                         within=5, what="the consumer to hear the breaker is open")
        # when messages arrive and the breaker turns half-open,
        published = await lab.app.apublish_many(stream, (Order(n=n) for n in range(5)))
        # then its three probes run at the same time, not one after another,
        await pool.until(lambda: most == 3, within=5, what="three probes at once")
        assert len(running) == 3
        # and once they succeed the breaker closes and the rest are handled.
        release.set()
        await pool.until(lambda: _done(aredis, lab, name), within=5, what="every ack")
    snapshot = await breaker_store.read_state(aredis, lab.keys(name))
    assert snapshot.state == "closed"
    assert most == 3 and not running and len(published) == 5
