"""Given a pool whose every Redis connection went silent (half-open: the proxy between
keeps it open, forwards nothing, and its kernel answers TCP keepalive), when messages are
published, then the pool gives those connections up by its reply timeout, connects again
and handles them all; nothing is lost or stuck behind the silent connections, not even an
entry whose read reply the silence swallowed (pending on the pool's own consumer, never
started): the pool takes it back as soon as it reconnects, not after ``claim_after``
(which this pool never reaches)."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from e2e.failure_helpers import NO_CLAIM, Lab, PoolRun, where
from pydantic import BaseModel

from chaos.proxy import FaultProxy
from queues.connection import POOL_REPLY_TIMEOUT
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.slow

class Item(BaseModel):
    n: int


async def test_a_pool_recovers_from_half_open_connections() -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    port = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    with FaultProxy(port) as proxy:
        lab = Lab(uuid.uuid4().hex[:10], proxy.url())
        lab.app.pool("default", claim_after=NO_CLAIM, concurrency=8)
        stream, handled = lab.stream("quiet"), lab.key("handled")

        @lab.app.handler(stream, name=lab.name("quiet"), breaker=None)
        async def quiet(item: Item) -> None:
            await client.sadd(handled, item.n)

        producer = aioredis.Redis.from_url(REDIS_URL)
        try:
            async with PoolRun(lab.app) as run:
                # Given a pool that handles messages through the proxy,
                await producer.xadd(stream, {"payload": '{"n": 0}'})
                await run.until(lambda: client.scard(handled), within=15,
                                what="the first message handled")
                # when every connection it holds goes silent for ever,
                silenced = proxy.half_open()
                assert silenced > 0
                before = proxy.connections
                for n in range(1, 51):
                    await producer.xadd(stream, {"payload": f'{{"n": {n}}}'})
                # then it connects again and handles every message.
                await run.until(lambda: _count(client, handled, 51),
                                within=POOL_REPLY_TIMEOUT * 3,
                                what="every message handled after the silence")
                assert proxy.connections > before
                keys = lab.keys(lab.name("quiet"))

                async def all_acked() -> bool:
                    return not (await where(client, keys)).everywhere()

                await run.until(all_acked, within=POOL_REPLY_TIMEOUT * 2,
                                what="every message acked")
        finally:
            await lab.cleanup(client)
            await producer.aclose()
            await client.aclose()


async def _count(client: aioredis.Redis, key: str, want: int) -> bool:
    return int(await client.scard(key)) >= want
