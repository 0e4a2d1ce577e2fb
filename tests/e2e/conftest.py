"""End-to-end fixtures: real ``seawall run`` supervisors and pool processes against the real
Redis, each test with its own app module, app name, streams and keys, all removed after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from e2e.failure_helpers import NO_CLAIM, Lab
from e2e.support import E2E, alive


@pytest.fixture
def e2e(tmp_path: Path, uid: str, sync_redis: redis.Redis, redis_url: str,
        request: pytest.FixtureRequest) -> Iterator[E2E]:
    world = E2E(uid, tmp_path, redis_url, sync_redis)
    try:
        yield world
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(world.all_logs())
        world.kill_all()
        world.cleanup()
    assert not any(alive(p.pid) for p in world.procs)


@pytest.fixture
def lab_pool() -> dict[str, Any] | None:
    """Options of the ``default`` pool a :func:`lab` declares (it never looks for abandoned
    entries unless told), or None for no pool: a test module overrides this fixture."""
    return None


@pytest.fixture
async def lab(uid: str, redis_url: str, aredis: aioredis.Redis,
              lab_pool: dict[str, Any] | None) -> AsyncIterator[Lab]:
    """An in-process test's world (app, streams, handler names), removed afterwards."""
    world = Lab(uid, redis_url)
    if lab_pool is not None:
        world.app.pool("default", **{"claim_after": NO_CLAIM, **lab_pool})
    yield world
    await world.cleanup(aredis)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[Any]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
