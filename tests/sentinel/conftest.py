"""Fixtures of the Sentinel tests: a primary, a replica and three sentinels of the test's
own, and the shared fixtures ``redis_url``, ``sync_redis`` and ``aredis`` pointed at the
primary through the sentinels (a ``redis+sentinel://`` URL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from e2e.conftest import e2e, pytest_runtest_makereport

from queues.connection import connect, connect_sync
from sentinel.local_sentinel import LocalSentinel

__all__ = ["aredis", "e2e", "pytest_runtest_makereport", "redis_url", "sentinel",
           "sync_redis"]


@pytest.fixture
def sentinel() -> Iterator[LocalSentinel]:
    local = LocalSentinel()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def redis_url(sentinel: LocalSentinel) -> str:
    return sentinel.url


@pytest.fixture
def sync_redis(sentinel: LocalSentinel) -> Iterator[redis.Redis]:
    client = connect_sync(sentinel.url)
    yield client
    client.close()


@pytest.fixture
async def aredis(sentinel: LocalSentinel) -> AsyncIterator[aioredis.Redis]:
    client = connect(sentinel.url)
    yield client
    await client.aclose()
