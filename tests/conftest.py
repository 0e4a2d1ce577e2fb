"""Shared fixtures. Every test talks to a real Redis (``SEAWALL_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/0``) and gets stream names of its own, so tests never see each
other's data."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

REDIS_URL = os.environ.get("SEAWALL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def uid() -> str:
    """A unique suffix for stream and handler names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def sync_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"no Redis answers at {REDIS_URL}; start one (.ci/run does)")
    yield client
    client.close()


@pytest.fixture
async def aredis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()
