"""Given a pool reading through an outage, when Redis comes back empty (its data lost:
no group, no stream), then the pool neither crashes nor stalls: looking for entries of a
lost read reply finds no group and moves on, the next read makes the group again, and
messages published afterwards are handled."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from e2e.failure_helpers import NO_CLAIM, DurableRedis, Lab, PoolRun
from pydantic import BaseModel

from tests.conftest import REDIS_URL

pytestmark = pytest.mark.slow


def _wipe(directory: Path) -> None:
    """Remove the append-only file(s) of a stopped redis-server: it restarts empty."""
    for item in directory.iterdir():
        if item.name.startswith("appendonly"):
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()


class Item(BaseModel):
    n: int


async def test_a_pool_carries_on_when_redis_comes_back_empty(tmp_path: Path) -> None:
    server = DurableRedis(tmp_path)
    server.start()
    witness = aioredis.Redis.from_url(REDIS_URL)
    lab = Lab(uuid.uuid4().hex[:10], server.url)
    lab.app.pool("default", claim_after=NO_CLAIM, concurrency=4)
    stream, handled = lab.stream("wiped"), lab.key("handled")

    @lab.app.handler(stream, name=lab.name("wiped"), breaker=None)
    async def wiped(item: Item) -> None:
        await witness.sadd(handled, item.n)

    client = aioredis.Redis.from_url(server.url)
    try:
        async with PoolRun(lab.app) as run:
            # Given a pool handling messages,
            await client.xadd(stream, {"payload": '{"n": 1}'})
            await run.until(lambda: witness.scard(handled), within=15, what="message 1")
            # when Redis goes away and comes back with nothing,
            server.stop()
            _wipe(tmp_path)
            server.start()
            await client.aclose()
            client = aioredis.Redis.from_url(server.url)
            # then what is published afterwards is handled.
            await client.xadd(stream, {"payload": '{"n": 2}'})

            async def both() -> bool:
                return int(await witness.scard(handled)) == 2

            await run.until(both, within=30, what="message 2 after the wipe")
    finally:
        await witness.delete(handled)
        await witness.aclose()
        await client.aclose()
        await lab.app.aclose()
        server.kill()
