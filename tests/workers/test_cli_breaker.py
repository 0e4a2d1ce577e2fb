"""``seawall breaker list|open|close|reset`` against the real Redis, through click's runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from click.testing import CliRunner, Result

from queues import breaker_store as store
from queues.keys import REGISTRY
from workers.breaker import CircuitBreaker, Outcome
from workers.cli.breaker import breaker
from workers.registry import HandlerRecord


@pytest.fixture
def handler(uid: str, sync_redis: redis.Redis) -> Iterator[HandlerRecord]:
    """A registered handler with a breaker, and one without; both removed afterwards."""
    record = HandlerRecord(name=f"tests.charge_{uid}", stream=f"orders-{uid}", pool="payments",
                           app="tests", breaker=CircuitBreaker(window=4, min_calls=2).to_record())
    bare = HandlerRecord(name=f"tests.bare_{uid}", stream=f"orders-{uid}", pool="default",
                         app="tests", breaker=None)
    sync_redis.hset(REGISTRY, mapping={r.name: r.to_json() for r in (record, bare)})
    yield record
    sync_redis.hdel(REGISTRY, record.name, bare.name)
    sync_redis.delete(record.keys.breaker, bare.keys.breaker, record.keys.breaker_log,
                      bare.keys.breaker_log)


def run(redis_url: str, *args: str) -> Result:
    return CliRunner().invoke(breaker, [*args, "--redis-url", redis_url])


def listed(redis_url: str, name: str) -> dict[str, Any]:
    result = run(redis_url, "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["handler"]: row for row in json.loads(result.stdout)}
    return rows[name]  # type: ignore[no-any-return]


def test_list_shows_state_rates_and_calls(redis_url: str, handler: HandlerRecord,
                                          sync_redis: redis.Redis) -> None:
    row = listed(redis_url, handler.name)
    assert (row["state"], row["calls"], row["window"], row["half_open_in"]) == (
        "closed", 0, 4, None)
    assert listed(redis_url, handler.name.replace("charge", "bare"))["state"] == "none"
    result = run(redis_url, "list")
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith(handler.name))
    assert line.split()[1:] == ["closed", "0%", "0%", "0/4", "-"]


async def test_list_shows_a_breaker_the_fleet_opened(redis_url: str, handler: HandlerRecord,
                                                     aredis: aioredis.Redis) -> None:
    # Given workers recorded failures (through the same script as the runtime, server clock)
    config = CircuitBreaker(window=4, min_calls=2, open_for=30.0)
    outcomes = [Outcome.SUCCESS, Outcome.SLOW_SUCCESS, Outcome.FAILURE, Outcome.SLOW_FAILURE]
    result = await store.record_outcomes(aredis, handler.keys, config.params(), outcomes)
    assert result.state == "open"
    # When an operator lists the breakers, then they see why it opened and when it probes
    row = listed(redis_url, handler.name)
    assert (row["state"], row["calls"], row["failure_rate"], row["slow_rate"]) == (
        "open", 4, 0.5, 0.5)
    assert 25.0 < row["half_open_in"] <= 30.0


def test_open_close_and_reset(redis_url: str, handler: HandlerRecord) -> None:
    result = run(redis_url, "open", handler.name)
    assert result.exit_code == 0, result.output
    assert "forced open until closed" in result.stdout
    row = listed(redis_url, handler.name)
    assert (row["state"], row["half_open_in"]) == ("forced_open", None)

    result = run(redis_url, "open", handler.name, "--for", "90")
    assert result.exit_code == 0, result.output
    assert 85.0 < listed(redis_url, handler.name)["half_open_in"] <= 90.0

    result = run(redis_url, "close", handler.name)
    assert (result.exit_code, listed(redis_url, handler.name)["state"]) == (0, "closed")

    run(redis_url, "open", handler.name)
    result = run(redis_url, "reset", handler.name)
    assert (result.exit_code, listed(redis_url, handler.name)["state"]) == (0, "closed")


def test_an_unknown_handler_is_a_usage_error(redis_url: str, handler: HandlerRecord) -> None:
    result = run(redis_url, "open", "no.such.handler")
    assert result.exit_code == 2
    assert "unknown handler 'no.such.handler'" in result.output


def test_a_bad_duration_is_a_usage_error(redis_url: str, handler: HandlerRecord) -> None:
    assert run(redis_url, "open", handler.name, "--for", "-5").exit_code == 2


def test_a_handler_without_a_breaker_fails(redis_url: str, handler: HandlerRecord) -> None:
    result = run(redis_url, "close", handler.name.replace("charge", "bare"))
    assert result.exit_code == 1
    assert "has no circuit breaker" in result.output


def test_unreachable_redis_fails_without_printing_the_password() -> None:
    result = CliRunner().invoke(breaker, ["list", "--redis-url", "redis://:s3cret@127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.output
    assert "s3cret" not in result.output


def test_the_group_is_wired_into_seawall(redis_url: str, handler: HandlerRecord) -> None:
    from workers.cli.main import cli

    result = CliRunner().invoke(cli, ["breaker", "list", "--json", "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
