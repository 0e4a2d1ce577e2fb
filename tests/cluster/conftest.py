"""Fixtures of the cluster suite: one local Redis Cluster (3 masters, 3 replicas) for the
whole session, and the shared fixtures ``redis_url``, ``sync_redis`` and ``aredis``
pointed at it, so that tests written for one Redis run on the cluster unchanged (the test
modules here import them).

Every Lua script called in this process while a cluster test runs (in-process pools, the
CLI's operations) is checked to be given keys of one hash slot: :func:`one_slot_scripts`.
Pool processes are checked by the cluster itself, which refuses such a call (CROSSSLOT)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from e2e.conftest import e2e, lab, lab_pool, pytest_runtest_makereport

from cluster.local_cluster import LocalCluster
from queues.commit import slot_of
from queues.connection import connect, connect_sync
from queues.scripts import LuaScript

__all__ = [
    "aredis",
    "cluster",
    "e2e",
    "lab",
    "lab_pool",
    "one_slot_scripts",
    "pytest_runtest_makereport",
    "redis_url",
    "sync_redis",
]


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


def _key(raw: str | bytes) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw


def _check(script: LuaScript, keys: list[str] | list[bytes]) -> None:
    slots = {slot_of(_key(k)) for k in keys}
    assert len(slots) <= 1, (
        f"{script.name}.lua was given keys of {len(slots)} hash slots: {keys!r}")


@pytest.fixture(autouse=True)
def one_slot_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail a test whose code calls a Lua script with keys of more than one slot."""
    queue, with_source = LuaScript.queue, LuaScript.queue_with_source
    call, call_sync = LuaScript.__call__, LuaScript.call_sync

    def checked_queue(self: LuaScript, pipe: Any, keys: Any, args: list[Any]) -> None:
        _check(self, keys)
        queue(self, pipe, keys, args)

    def checked_with_source(self: LuaScript, pipe: Any, keys: Any, args: list[Any]) -> None:
        _check(self, keys)
        with_source(self, pipe, keys, args)

    async def checked_call(self: LuaScript, client: Any, keys: list[str],
                           args: list[Any]) -> Any:
        _check(self, keys)
        return await call(self, client, keys, args)

    def checked_call_sync(self: LuaScript, client: Any, keys: list[str],
                          args: list[Any]) -> Any:
        _check(self, keys)
        return call_sync(self, client, keys, args)

    monkeypatch.setattr(LuaScript, "queue", checked_queue)
    monkeypatch.setattr(LuaScript, "queue_with_source", checked_with_source)
    monkeypatch.setattr(LuaScript, "__call__", checked_call)
    monkeypatch.setattr(LuaScript, "call_sync", checked_call_sync)
