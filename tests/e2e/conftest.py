"""End-to-end fixtures: real ``seawall run`` supervisors and pool processes against the real
Redis, each test with its own app module, app name, streams and keys, all removed after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[Any]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
