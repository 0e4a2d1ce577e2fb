"""Pool restart counts against a real Redis (the hash is shared: pool names of our own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from queues.keys import RESTARTS
from queues.restarts import count_restart_sync, read_restarts_sync


@pytest.fixture
def pool(uid: str, sync_redis: redis.Redis) -> Iterator[str]:
    name = f"payments-{uid}"
    yield name
    sync_redis.hdel(RESTARTS, name)


def test_restarts_are_counted_per_pool(sync_redis: redis.Redis, pool: str) -> None:
    assert pool not in read_restarts_sync(sync_redis)
    assert count_restart_sync(sync_redis, pool) == 1
    assert count_restart_sync(sync_redis, pool) == 2
    assert read_restarts_sync(sync_redis)[pool] == 2
