"""Fixtures of the cluster suite: one local Redis Cluster (3 masters, 3 replicas) for the
whole session, and the shared fixtures ``redis_url``, ``sync_redis`` and ``aredis``
pointed at it, so that tests written for one Redis run on the cluster unchanged (the test
modules here import them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from e2e.conftest import e2e, lab, lab_pool, pytest_runtest_makereport

from cluster.local_cluster import LocalCluster
from queues.connection import connect, connect_sync

__all__ = ["aredis", "cluster", "e2e", "lab", "lab_pool", "pytest_runtest_makereport",
           "redis_url", "sync_redis"]


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    local = LocalCluster()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def redis_url(cluster: LocalCluster) -> str:
    return cluster.url


@pytest.fixture
def sync_redis(cluster: LocalCluster) -> Iterator[redis.Redis]:
    client = connect_sync(cluster.url)
    yield client
    client.close()


@pytest.fixture
async def aredis(cluster: LocalCluster) -> AsyncIterator[aioredis.Redis]:
    client = connect(cluster.url)
    yield client
    await client.aclose()
