"""``seawall status`` against a real Redis: a registered handler's backlog, outcome counts
and breaker, and a pool's heartbeat, in the JSON and in the table. Handler, stream and app
names are the test's own; the shared hashes lose the test's fields afterwards."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner

from queues.keys import OUTCOMES, PROCESSES, REGISTRY
from workers.breaker import CircuitBreaker
from workers.cli.status import render, settled, status
from workers.registry import HandlerRecord
from workers.status import collect


@pytest.fixture
def record(uid: str, sync_redis: redis.Redis, redis_url: str) -> Iterator[HandlerRecord]:
    rec = HandlerRecord(name=f"billing.charge-{uid}", stream=f"orders-{uid}", pool="payments",
                        app=f"shop-{uid}", breaker=CircuitBreaker().to_record())
    consumer = f"shop-{uid}:payments:host:0"
    sync_redis.hset(REGISTRY, rec.name, rec.to_json())
    sync_redis.hset(PROCESSES, consumer, json.dumps({
        "app": rec.app, "pool": "payments", "pid": 7, "host": "host", "slot": 0,
        "seen_at": int(time.time() * 1000)}))
    sync_redis.hset(OUTCOMES, mapping={f"{rec.name}\x1fok": 40, f"{rec.name}\x1fretry": 3,
                                       f"{rec.name}\x1fdead_letter": 1,
                                       f"{rec.name}\x1fparked": 12})
    sync_redis.xadd(rec.stream, {"payload": "{}"})
    yield rec
    sync_redis.hdel(REGISTRY, rec.name)
    sync_redis.hdel(PROCESSES, consumer)
    sync_redis.hdel(OUTCOMES, *(f"{rec.name}\x1f{kind}"
                                for kind in ("ok", "retry", "dead_letter", "parked")))
    sync_redis.delete(rec.stream, rec.keys.breaker)


def test_status_reports_backlog_outcomes_breaker_and_live_processes(
        sync_redis: redis.Redis, record: HandlerRecord, redis_url: str) -> None:
    report = collect(sync_redis)

    [handler] = [h for h in report.handlers if h.name == record.name]
    assert (handler.lag, handler.pending, handler.consumers) == (None, 0, 0)  # no group yet
    assert handler.breaker == "closed"
    assert handler.outcomes == {"ok": 40, "retry": 3, "dead_letter": 1, "fallback": 0,
                                "parked": 12, "skipped": 0, "aborted": 0}
    [pool] = [p for p in report.pools if p.app == record.app]
    assert (pool.name, pool.alive) == ("payments", 1)
    assert settled(handler) == "40/3/1 +12 parked"
    table = render(report)
    assert "SETTLED OK/RETRY/DEAD" in table.splitlines()[0]
    [row] = [line for line in table.splitlines() if line.startswith(record.name)]
    assert row.split()[-4:] == ["closed", "40/3/1", "+12", "parked"]

    result = CliRunner().invoke(status, ["--json", "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    [as_json] = [h for h in json.loads(result.output)["handlers"] if h["name"] == record.name]
    assert as_json["outcomes"]["ok"] == 40 and as_json["outcomes"]["dead_letter"] == 1
