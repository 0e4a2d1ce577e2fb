"""``seawall dlq`` through click's CliRunner, on dead letters made by the real scripts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from queues.connection import connect
from queues.dead_letters import dead_letter, dead_letter_fields
from queues.keys import REGISTRY
from queues.streams import ensure_group, read_group
from workers.cli.dlq import dlq, parse_instant, pause_for
from workers.registry import HandlerRecord, registry_mapping

NOW_MS = 1_700_000_000_000


@pytest.fixture
def record(sync_redis: redis.Redis, uid: str) -> Iterator[HandlerRecord]:
    """Given a handler in the registry (removed again afterwards)."""
    rec = HandlerRecord(name=f"billing.charge-{uid}", stream=f"orders-{uid}", pool="default",
                        app="shop")
    sync_redis.hset(REGISTRY, mapping=registry_mapping([rec]))  # type: ignore[arg-type]
    yield rec
    sync_redis.hdel(REGISTRY, rec.name)


def make_dead_letters(url: str, rec: HandlerRecord, error_types: list[str]) -> list[str]:
    """Given one dead letter per error type, made as the runtime makes them; their ids."""

    async def main() -> list[str]:
        client = connect(url)
        keys = rec.keys
        try:
            await ensure_group(client, keys.stream, keys.group)
            for i, _ in enumerate(error_types):
                await client.xadd(keys.stream, {"payload": json.dumps({"order": i, "sku": "A"}),
                                                "id": f"m{i}", "attempt": "1"})
            envs = await read_group(client, keys.group, "c1", [keys.stream],
                                    count=len(error_types), block_ms=None)
            for env, error_type in zip(envs, error_types, strict=True):
                fields = dead_letter_fields(
                    env.fields, handler=rec.name, stream=rec.stream,
                    origin_entry_id=env.entry_id, attempts=5, error_type=error_type,
                    error=f"{error_type} happened\nsecond line", traceback="Traceback: ...",
                    first_failed_at_ms=NOW_MS - 1000, failed_at_ms=NOW_MS, consumer="c1",
                    host="host-1", reason="attempts exhausted: 5 attempts in 60s",
                )
                assert await dead_letter(client, source_stream=env.source, group=keys.group,
                                         entry_id=env.entry_id, dlq_key=keys.dlq, fields=fields)
            return [r[0].decode() for r in await client.xrange(keys.dlq)]
        finally:
            await client.aclose()

    return asyncio.run(main())


Invoke = Callable[..., Result]


@pytest.fixture
def run(redis_url: str) -> Invoke:
    """``seawall dlq ARGS --redis-url URL``."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(dlq, [*args, "--redis-url", redis_url], input=input)

    return invoke


def test_list_shows_a_table_newest_first(
    run: Invoke, record: HandlerRecord, redis_url: str
) -> None:
    ids = make_dead_letters(redis_url, record, ["ValueError", "KeyError"])

    result = run("list", "--handler", record.name)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "HANDLER", "ERROR", "TYPE", "MESSAGE", "ATTEMPTS",
                                "FAILED", "AT"]
    assert lines[1].startswith(ids[1]) and "KeyError happened" in lines[1]
    assert lines[2].startswith(ids[0]) and "2023-11-14 22:13:20Z" in lines[2]
    assert "second line" not in result.output


def test_list_as_json_lines_filtered_by_error_type(run: Invoke, record: HandlerRecord,
                                                   redis_url: str) -> None:
    ids = make_dead_letters(redis_url, record, ["ValueError", "KeyError", "ValueError"])

    result = run("list", "-H", record.name, "--json", "--error-type", "ValueError")

    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["id"] for r in rows] == [ids[2], ids[0]]
    assert rows[0]["payload"] == {"order": 2, "sku": "A"}
    assert rows[0]["attempts"] == 5
    assert rows[0]["headers"]["id"] == "m2"


def test_list_without_a_handler_summarises_by_error_type(run: Invoke, record: HandlerRecord,
                                                         redis_url: str) -> None:
    make_dead_letters(redis_url, record, ["ValueError", "KeyError", "ValueError"])

    table = run("list")
    as_json = run("list", "--json")

    assert table.exit_code == 0, table.output
    mine = [line.split() for line in table.output.splitlines() if record.name in line]
    assert mine == [[record.name, record.stream, "ValueError", "2"],
                    [record.name, record.stream, "KeyError", "1"]]
    [summary] = [json.loads(line) for line in as_json.output.splitlines()
                 if record.name in line]
    assert summary == {"handler": record.name, "stream": record.stream, "total": 3,
                       "by_error_type": {"ValueError": 2, "KeyError": 1}}


def test_an_unknown_handler_is_a_usage_error(run: Invoke, record: HandlerRecord) -> None:
    result = run("list", "--handler", "nope-" + record.name)

    assert result.exit_code == 2
    assert "unknown handler" in result.output


def test_show_prints_the_whole_entry(run: Invoke, record: HandlerRecord, redis_url: str) -> None:
    [entry_id] = make_dead_letters(redis_url, record, ["ValueError"])

    text = run("show", entry_id, "--handler", record.name)
    as_json = run("show", entry_id, "--handler", record.name, "--json")

    assert text.exit_code == 0, text.output
    assert '"sku": "A"' in text.output
    assert "Traceback: ..." in text.output
    assert "attempts exhausted" in text.output
    assert json.loads(as_json.output)["error_type"] == "ValueError"


def test_show_of_a_missing_entry_fails(run: Invoke, record: HandlerRecord) -> None:
    assert run("show", "1-1", "--handler", record.name).exit_code == 1
    assert run("show", "not-an-id", "--handler", record.name).exit_code == 2


def test_replay_dry_run_changes_nothing(run: Invoke, record: HandlerRecord, redis_url: str,
                                        sync_redis: redis.Redis) -> None:
    ids = make_dead_letters(redis_url, record, ["ValueError", "KeyError"])

    result = run("replay", "--handler", record.name, "--all", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "would replay 2" in result.output
    assert ids[0] in result.output and ids[1] in result.output
    assert sync_redis.xlen(record.keys.dlq) == 2
    assert sync_redis.exists(record.keys.retry) == 0


def test_replay_all_with_yes_moves_everything_to_the_retry_stream(
    run: Invoke, record: HandlerRecord, redis_url: str, sync_redis: redis.Redis
) -> None:
    ids = make_dead_letters(redis_url, record, ["ValueError", "KeyError", "ValueError"])

    result = run("replay", "--handler", record.name, "--all", "--yes")

    assert result.exit_code == 0, result.output
    assert "replayed 3" in result.output
    assert sync_redis.xlen(record.keys.dlq) == 0
    moved = sync_redis.xrange(record.keys.retry)
    assert [f[b"replayed_from"].decode() for _, f in moved] == ids
    assert all(f[b"attempt"] == b"1" for _, f in moved)
    assert sync_redis.xlen(record.stream) == 3, "the user's stream is never written to"


def test_a_long_replay_goes_in_batches_with_a_progress_bar(
    run: Invoke, record: HandlerRecord, redis_url: str, sync_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = make_dead_letters(redis_url, record, ["ValueError"] * 7)
    monkeypatch.setattr("workers.cli.dlq.BATCH", 2)

    result = run("replay", "--handler", record.name, "--all", "--yes")

    assert result.exit_code == 0, result.output
    assert "replaying" in result.output
    assert "replayed 7" in result.output
    replayed = [f[b"replayed_from"].decode() for _, f in sync_redis.xrange(record.keys.retry)]
    assert replayed == ids


def test_replay_by_id_and_by_error_type(run: Invoke, record: HandlerRecord, redis_url: str,
                                        sync_redis: redis.Redis) -> None:
    ids = make_dead_letters(redis_url, record, ["ValueError", "KeyError", "ValueError"])

    by_id = run("replay", "-H", record.name, "--id", ids[1], "--id", "9-9")
    by_type = run("replay", "-H", record.name, "--all", "--error-type", "ValueError",
                  "--limit", "1", "--yes", "--rate", "1000")

    assert by_id.exit_code == 0, by_id.output
    assert "not found" in by_id.output and "replayed 1" in by_id.output
    assert by_type.exit_code == 0, by_type.output
    replayed = [f[b"replayed_from"].decode() for _, f in sync_redis.xrange(record.keys.retry)]
    assert replayed == [ids[1], ids[0]]
    assert [r[0].decode() for r in sync_redis.xrange(record.keys.dlq)] == [ids[2]]


def test_bulk_replay_without_yes_and_without_a_terminal_is_refused(
    run: Invoke, record: HandlerRecord, redis_url: str, sync_redis: redis.Redis
) -> None:
    make_dead_letters(redis_url, record, ["ValueError"])

    result = run("replay", "--handler", record.name, "--all")

    assert result.exit_code == 1
    assert "--yes" in result.output
    assert sync_redis.xlen(record.keys.dlq) == 1


@pytest.mark.parametrize(("answer", "exit_code", "left"), [("y\n", 0, 0), ("n\n", 1, 1)])
def test_bulk_replay_asks_on_a_terminal(
    run: Invoke, record: HandlerRecord, redis_url: str, sync_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch, answer: str, exit_code: int, left: int,
) -> None:
    make_dead_letters(redis_url, record, ["ValueError"])
    monkeypatch.setattr("workers.cli.dlq._is_terminal", lambda: True)

    result = run("replay", "--handler", record.name, "--all", input=answer)

    assert result.exit_code == exit_code, result.output
    assert "Replay 1 dead letter(s)" in result.output
    assert sync_redis.xlen(record.keys.dlq) == left


@pytest.mark.parametrize("args", [[], ["--all", "--id", "1-1"]])
def test_replay_needs_either_ids_or_all(
    run: Invoke, record: HandlerRecord, args: list[str]
) -> None:
    result = run("replay", "--handler", record.name, *args)

    assert result.exit_code == 2
    assert "either --id" in result.output


def test_purge_by_id_and_before(run: Invoke, record: HandlerRecord, redis_url: str,
                                sync_redis: redis.Redis) -> None:
    ids = make_dead_letters(redis_url, record, ["ValueError", "KeyError", "ValueError"])

    refused = run("purge", "-H", record.name, "--id", ids[0])
    by_id = run("purge", "-H", record.name, "--id", ids[0], "--yes")
    before_then = run("purge", "-H", record.name, "--all", "--before", "2000-01-01", "--yes")
    assert sync_redis.xlen(record.keys.dlq) == 2
    everything = run("purge", "-H", record.name, "--all", "--yes")

    assert refused.exit_code == 1 and "--yes" in refused.output
    assert by_id.exit_code == 0 and "purged 1" in by_id.output
    assert before_then.exit_code == 0 and "nothing to purge" in before_then.output
    assert everything.exit_code == 0 and "purged 2" in everything.output
    assert sync_redis.xlen(record.keys.dlq) == 0


def test_handlers_can_come_from_the_app(
    run: Invoke, redis_url: str, uid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given an app that never ran (nothing in the registry), --app finds its handlers."""
    (tmp_path / f"dlqapp_{uid}.py").write_text(
        "from workers.app import App\n"
        "app = App('shop')\n"
        f"@app.handler('orders-{uid}', name='charge-{uid}')\n"
        "def charge(order: dict) -> None: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    rec = HandlerRecord(name=f"charge-{uid}", stream=f"orders-{uid}", pool="default", app="shop")
    [entry_id] = make_dead_letters(redis_url, rec, ["ValueError"])

    listed = run("list", "--app", f"dlqapp_{uid}:app", "-H", rec.name)
    summary = run("list", "--app", f"dlqapp_{uid}:app")
    unknown = run("list", "--app", f"dlqapp_{uid}:app", "-H", "nope")
    bad_app = run("list", "--app", f"dlqapp_{uid}:nothing")

    assert listed.exit_code == 0, listed.output
    assert entry_id in listed.output
    assert summary.output.split() == ["HANDLER", "STREAM", "ERROR", "TYPE", "COUNT",
                                      rec.name, rec.stream, "ValueError", "1"]
    assert unknown.exit_code == 2 and "the app has" in unknown.output
    assert bad_app.exit_code == 2 and "no attribute" in bad_app.output


def test_a_bad_time_is_a_usage_error(run: Invoke, record: HandlerRecord) -> None:
    result = run("list", "-H", record.name, "--since", "yesterday-ish")

    assert result.exit_code == 2
    assert "ISO 8601" in result.output


def test_parse_instant_reads_iso_and_ages() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    assert parse_instant("2024-05-01T12:00:00Z") == int(now.timestamp() * 1000)
    assert parse_instant("2024-05-01T12:00:00") == int(now.timestamp() * 1000)
    assert parse_instant("2024-05-01T14:00:00+02:00") == int(now.timestamp() * 1000)
    assert parse_instant("2h", now=now) == int(now.timestamp() * 1000) - 7_200_000
    assert parse_instant("30m", now=now) == int(now.timestamp() * 1000) - 1_800_000


def test_pause_for_keeps_under_the_rate() -> None:
    assert pause_for(10, None, 0.0) == 0.0
    assert pause_for(10, 5.0, 0.5) == 1.5
    assert pause_for(10, 5.0, 3.0) == 0.0
