"""A handler's backlog figures (what ``seawall status`` shows) against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from queues.backlog import GroupFigures, HandlerBacklog, group_figures_sync, handler_backlog_sync
from queues.keys import HandlerKeys


@pytest.fixture
def keys(uid: str, sync_redis: redis.Redis) -> Iterator[HandlerKeys]:
    handler_keys = HandlerKeys(f"orders-{uid}", f"billing.charge-{uid}")
    yield handler_keys
    sync_redis.delete(handler_keys.stream, handler_keys.retry, handler_keys.delayed,
                      handler_keys.dlq)


def test_a_handler_that_never_ran_has_no_group_and_nothing_waiting(
        sync_redis: redis.Redis, keys: HandlerKeys) -> None:
    assert group_figures_sync(sync_redis, keys.stream, keys.group) is None
    assert handler_backlog_sync(sync_redis, keys) == HandlerBacklog(None, 0, 0, 0)


def test_lag_pending_retries_delayed_and_dead_letters_are_counted(
        sync_redis: redis.Redis, keys: HandlerKeys) -> None:
    # Given three messages on the stream, one read and not acked,
    for n in range(3):
        sync_redis.xadd(keys.stream, {"payload": str(n)})
    sync_redis.xgroup_create(keys.stream, keys.group, id="0")
    sync_redis.xgroup_create(keys.stream, "another-group", id="0")
    sync_redis.xreadgroup(keys.group, "c1", {keys.stream: ">"}, count=1)
    # two redeliveries on the retry stream (one read), one delayed retry, one dead letter,
    sync_redis.xgroup_create(keys.retry, keys.group, id="0", mkstream=True)
    sync_redis.xadd(keys.retry, {"payload": "r1"})
    sync_redis.xadd(keys.retry, {"payload": "r2"})
    sync_redis.xreadgroup(keys.group, "c1", {keys.retry: ">"}, count=1)
    sync_redis.zadd(keys.delayed, {"m": 1})
    sync_redis.xadd(keys.dlq, {"payload": "d"})

    # then the figures say so.
    assert handler_backlog_sync(sync_redis, keys) == HandlerBacklog(
        group=GroupFigures(lag=2, pending=1, consumers=1), retry_pending=2, delayed=1,
        dead_letters=1)
