"""The figures the supervisor reads from Redis for ``/metrics`` (``fleet.sample``), against
the real Redis: a handler's lag, pending entries (its retry stream's included), the age of
its oldest pending entry, its delayed retries and dead letters, and the sagas by state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from queues.keys import HandlerKeys, SagaKeys
from workers.observability.fleet import sample
from workers.observability.totals import HandlerLabels


def keys_of(client: redis.Redis, pattern: str) -> list[bytes]:
    """The keys matching ``pattern``, and one that is never there (DEL needs one)."""
    return [*client.scan_iter(match=pattern, count=1000), b"test-fleet-figures:none"]


@pytest.fixture
def keys(uid: str, sync_redis: redis.Redis) -> Iterator[HandlerKeys]:
    handler_keys = HandlerKeys(f"orders-{uid}", f"billing.charge-{uid}")
    yield handler_keys
    sync_redis.delete(*keys_of(sync_redis, f"*orders-{uid}*"))


@pytest.fixture
def saga(uid: str, sync_redis: redis.Redis) -> Iterator[SagaKeys]:
    saga_keys = SagaKeys(f"checkout{uid}")
    yield saga_keys
    sync_redis.delete(*keys_of(sync_redis, f"*{{saga:checkout{uid}}}*"))


def test_a_handlers_backlog_as_the_metrics_show_it(sync_redis: redis.Redis,
                                                    keys: HandlerKeys) -> None:
    # Given 5 entries on the stream, 2 of them delivered and not acked,
    for n in range(5):
        sync_redis.xadd(keys.stream, {"payload": f'{{"n": {n}}}'})
    sync_redis.xgroup_create(keys.stream, keys.group, "0")
    sync_redis.xreadgroup(keys.group, "c1", {keys.stream: ">"}, count=2)
    # one retry waiting on the retry stream, one delayed retry and one dead letter,
    sync_redis.xgroup_create(keys.retry, keys.group, "0", mkstream=True)
    sync_redis.xadd(keys.retry, {"payload": "{}"})
    sync_redis.zadd(keys.delayed, {"retry-1": 1})
    sync_redis.xadd(keys.dlq, {"payload": "{}"})

    [figures] = sample(sync_redis, [HandlerLabels(keys.handler, keys.stream, "p")]).handlers

    assert (figures.stream, figures.handler) == (keys.stream, keys.handler)
    assert figures.lag == 3
    assert figures.pending == 2 + 1
    assert figures.oldest_pending_age is not None and 0 <= figures.oldest_pending_age < 60
    assert (figures.delayed, figures.dead_letters) == (1, 1)


def test_a_handler_that_never_ran_has_no_lag_and_nothing_pending(
        sync_redis: redis.Redis, keys: HandlerKeys) -> None:
    [figures] = sample(sync_redis, [HandlerLabels(keys.handler, keys.stream, "p")]).handlers

    assert figures.lag is None and figures.pending == 0
    assert figures.oldest_pending_age is None
    assert (figures.delayed, figures.dead_letters) == (0, 0)


def test_sagas_are_counted_by_state(sync_redis: redis.Redis, saga: SagaKeys) -> None:
    sync_redis.zadd(saga.by_state("running"), {"s1": 1, "s2": 2})
    sync_redis.zadd(saga.by_state("compensated"), {"s3": 3})
    step = HandlerLabels(f"{saga.saga}.pay", saga.on("orders"), "p")

    counts = sample(sync_redis, [step]).sagas

    assert counts[(saga.saga, "running")] == 2
    assert counts[(saga.saga, "compensated")] == 1
    assert counts[(saga.saga, "failed")] == 0
    assert {s for s, _ in counts} == {saga.saga}
