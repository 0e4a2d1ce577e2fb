"""The dead letters' counts by error type (``HandlerKeys.dlq_counts``), kept by the scripts
that add and remove dead letters, against a full scan of the DLQ; and the bulk commands'
memory, flat in the size of the DLQ."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from queues.connection import connect
from queues.dead_letters import (
    _DEAD_LETTER,
    failure_pairs,
    pack_constant,
    pack_failure,
    pack_letter,
    purge,
    queue_dead_letters,
    replay,
    stored_counts,
)
from queues.keys import REGISTRY
from workers.cli.dlq import dlq
from workers.registry import HandlerRecord, registry_mapping

SEAWALL = str(Path(sys.executable).with_name("seawall"))
ERROR_TYPES = ["ValueError", "KeyError", "TimeoutError", "ValidationError"]


@pytest.fixture
def record(sync_redis: redis.Redis, uid: str) -> Iterator[HandlerRecord]:
    """Given a handler in the registry; its keys are deleted afterwards."""
    rec = HandlerRecord(name=f"counts.h-{uid}", stream=f"counts-{uid}", pool="default",
                        app="shop")
    sync_redis.hset(REGISTRY, mapping=registry_mapping([rec]))  # type: ignore[arg-type]
    yield rec
    sync_redis.hdel(REGISTRY, rec.name)
    keys = rec.keys
    sync_redis.delete(keys.stream, keys.retry, keys.dlq, keys.dlq_counts)


def seed(client: redis.Redis, rec: HandlerRecord, error_types: list[str],
         batch: int = 500) -> None:
    """Dead-letter one new message per error type through the real ``dead_letter.lua``,
    a batch per script call, pipelined: as the runtime does, fast."""
    keys = rec.keys
    client.script_load(_DEAD_LETTER.source)
    try:
        client.xgroup_create(keys.stream, keys.group, id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    constant = pack_constant(handler=rec.name, stream=rec.stream, consumer="c1", host="h")
    failure = {error_type: pack_failure(constant, error_type=error_type, error="boom",
                                        traceback="Traceback: ...", reason="attempts exhausted")
               for error_type in set(error_types)}
    number = {error_type: n for n, error_type in enumerate(sorted(failure), start=1)}
    for start in range(0, len(error_types), 20_000):
        part = error_types[start : start + 20_000]
        pipe = client.pipeline(transaction=False)
        for i in range(len(part)):
            pipe.xadd(keys.stream, {"payload": b'{"n": %d}' % (start + i), "attempt": "1"})
        pipe.execute()
        rows = client.xreadgroup(keys.group, "c1", {keys.stream: ">"}, count=len(part))
        entries = rows[0][1]
        assert len(entries) == len(part)
        pipe = client.pipeline(transaction=False)
        for b in range(0, len(part), batch):
            # as the runtime sends them: a part shared by the letters of each error type,
            # and some with every field in the letter, no shared part
            letters = [
                (0, b"", pack_letter(
                    fields, entry_id=eid.decode(), failure=0, origin_entry_id=eid.decode(),
                    attempts=3, first_failed_at_ms=None, failed_at_ms=1,
                    rest=failure_pairs(constant, error_type=error_type, error="boom",
                                       traceback="Traceback: ...",
                                       reason="attempts exhausted")))
                if i % 5 == 0 else
                (number[error_type], failure[error_type], pack_letter(
                    fields, entry_id=eid.decode(), failure=number[error_type],
                    origin_entry_id=eid.decode(), attempts=3, first_failed_at_ms=None,
                    failed_at_ms=1))
                for i, ((eid, fields), error_type) in enumerate(zip(
                    entries[b : b + batch], part[b : b + batch], strict=True))]
            queue_dead_letters(pipe, source_stream=keys.stream, group=keys.group,
                               dlq_key=keys.dlq, letters=letters)
        pipe.execute()


def scan(client: redis.Redis, dlq_key: str) -> dict[str, int]:
    """Dead letters by error type, read one by one."""
    counts: Counter[str] = Counter()
    low = "-"
    while rows := client.xrange(dlq_key, low, "+", count=5000):
        for _, fields in rows:
            counts[fields.get(b"dlq_error_type", b"?").decode() or "?"] += 1
        low = "(" + rows[-1][0].decode()
    return dict(counts)


def kept(client: redis.Redis, rec: HandlerRecord) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(rec.keys.dlq_counts).items()}


def test_counts_equal_a_scan_after_random_adds_replays_and_purges(
    sync_redis: redis.Redis, redis_url: str, record: HandlerRecord
) -> None:
    rng = random.Random(13)
    keys = record.keys
    cli = CliRunner()

    async def replay_ids(ids: list[str]) -> None:
        client = connect(redis_url)
        try:
            await replay(client, dlq_key=keys.dlq, retry_stream=keys.retry, entry_ids=ids)
        finally:
            await client.aclose()

    async def purge_ids(ids: list[str]) -> None:
        client = connect(redis_url)
        try:
            await purge(client, dlq_key=keys.dlq, entry_ids=ids)
        finally:
            await client.aclose()

    ops = Counter[str]()
    for _ in range(60):
        ids = [r[0].decode() for r in sync_redis.xrange(keys.dlq)]
        op = rng.choice(["add", "add", "replay_ids", "replay_type", "replay_all",
                         "purge_ids", "purge_all"])
        ops[op] += 1
        if op == "add":
            seed(sync_redis, record, [rng.choice(ERROR_TYPES) for _ in range(rng.randint(1, 40))],
                 batch=rng.randint(1, 10))
        elif op == "replay_ids" and ids:
            chosen = rng.sample(ids, k=rng.randint(1, len(ids)))
            asyncio.run(replay_ids([*chosen, "9-9", *chosen[:2]]))  # absent and repeated
        elif op == "replay_type":
            result = cli.invoke(dlq, ["replay", "-H", record.name, "--all", "--yes",
                                      "--error-type", rng.choice(ERROR_TYPES),
                                      *(["--limit", str(rng.randint(1, 20))]
                                        if rng.random() < 0.5 else []),
                                      "--redis-url", redis_url])
            assert result.exit_code == 0, result.output
        elif op == "replay_all" and rng.random() < 0.3:
            result = cli.invoke(dlq, ["replay", "-H", record.name, "--all", "--yes",
                                      "--redis-url", redis_url])
            assert result.exit_code == 0, result.output
        elif op == "purge_ids" and ids:
            asyncio.run(purge_ids([*rng.sample(ids, k=rng.randint(1, len(ids))), "9-9"]))
        elif op == "purge_all" and rng.random() < 0.3:
            result = cli.invoke(dlq, ["purge", "-H", record.name, "--all", "--yes",
                                      "--redis-url", redis_url])
            assert result.exit_code == 0, result.output
        assert kept(sync_redis, record) == scan(sync_redis, keys.dlq), op

    assert ops["add"] > 5 and ops["replay_type"] > 3 and ops["purge_ids"] > 3

    async def from_counts() -> dict[str, int] | None:
        client = connect(redis_url)
        try:
            return await stored_counts(client, dlq_key=keys.dlq)
        finally:
            await client.aclose()

    assert asyncio.run(from_counts()) == scan(sync_redis, keys.dlq)
    summary = cli.invoke(dlq, ["list", "--json", "--redis-url", redis_url])
    assert summary.exit_code == 0, summary.output


def test_old_dead_letters_without_counts_are_still_counted(
    sync_redis: redis.Redis, redis_url: str, record: HandlerRecord
) -> None:
    """Given dead letters written before the counts existed, ``dlq list`` scans instead."""
    seed(sync_redis, record, ["ValueError", "KeyError", "ValueError"])
    sync_redis.delete(record.keys.dlq_counts)

    result = CliRunner().invoke(dlq, ["list", "--redis-url", redis_url])

    assert result.exit_code == 0, result.output
    line = [ln.split() for ln in result.output.splitlines() if record.name in ln]
    assert sorted(r[2:] for r in line) == [["KeyError", "1"], ["ValueError", "2"]]


def _place_check(client: redis.Redis, rec: HandlerRecord, n: int) -> None:
    """Every message is in exactly one place: the DLQ or the retry stream."""
    keys = rec.keys
    origins: Counter[bytes] = Counter()
    for key, field in ((keys.dlq, b"dlq_entry_id"), (keys.retry, b"origin_entry_id")):
        low = "-"
        while rows := client.xrange(key, low, "+", count=5000):
            origins.update(f[field] for _, f in rows)
            low = "(" + rows[-1][0].decode()
    assert len(origins) == n
    assert max(origins.values()) == 1


@pytest.mark.slow
def test_a_replay_killed_half_way_keeps_counts_and_places(
    sync_redis: redis.Redis, redis_url: str, record: HandlerRecord
) -> None:
    n = 20_000
    seed(sync_redis, record, [ERROR_TYPES[i % 4] for i in range(n)])
    keys = record.keys

    proc = subprocess.Popen([SEAWALL, "dlq", "replay", "-H", record.name, "--all", "--yes",
                             "--redis-url", redis_url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while sync_redis.xlen(keys.retry) < n // 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    moved = sync_redis.xlen(keys.retry)
    assert 0 < moved < n, "killed half-way"
    assert kept(sync_redis, record) == scan(sync_redis, keys.dlq)
    assert sum(kept(sync_redis, record).values()) == n - moved
    _place_check(sync_redis, record, n)

    # Run again: the rest moves, nothing doubles, the counts go to nothing.
    again = subprocess.run([SEAWALL, "dlq", "replay", "-H", record.name, "--all", "--yes",
                            "--redis-url", redis_url], capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert sync_redis.xlen(keys.dlq) == 0 and sync_redis.xlen(keys.retry) == n
    assert kept(sync_redis, record) == {}
    _place_check(sync_redis, record, n)


def _peak_rss_mb(args: list[str]) -> tuple[float, bytes]:
    """Run ``args``; its peak resident memory in MB: VmHWM from /proc while it runs (it
    only grows, and starts afresh at exec, unlike the fork's ``ru_maxrss``)."""
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()))  # type: ignore[union-attr]
        reader.start()
        peak_kb = 0
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        reader.join()
    out = b"".join(chunks)
    assert proc.returncode == 0, out
    return peak_kb / 1024, out


@pytest.mark.slow
def test_bulk_commands_over_200k_dead_letters_stay_under_100_mb(
    sync_redis: redis.Redis, redis_url: str, record: HandlerRecord
) -> None:
    n = 200_000
    seed(sync_redis, record, [ERROR_TYPES[i % 4] for i in range(n)])
    keys = record.keys
    assert sync_redis.xlen(keys.dlq) == n
    base = [SEAWALL, "dlq"]
    url = ["--redis-url", redis_url]
    peaks: dict[str, float] = {}

    peaks["list"], out = _peak_rss_mb([*base, "list", *url])
    assert f"{n // 4}".encode() in out
    peaks["list -H"], _ = _peak_rss_mb([*base, "list", "-H", record.name, *url])
    # Half replayed, half purged: each entry ends in one place.
    peaks["replay"], out = _peak_rss_mb([*base, "replay", "-H", record.name, "--all", "--yes",
                                         "--error-type", "ValueError", *url])
    assert f"replayed {n // 4}".encode() in out
    peaks["replay --all"], out = _peak_rss_mb([*base, "replay", "-H", record.name, "--all",
                                               "--yes", "--limit", str(n // 4), *url])
    assert f"replayed {n // 4}".encode() in out
    assert sync_redis.xlen(keys.retry) == n // 2
    _place_check(sync_redis, record, n)
    peaks["purge"], out = _peak_rss_mb([*base, "purge", "-H", record.name, "--all", "--yes",
                                        *url])
    assert f"purged {n // 2}".encode() in out

    print("peak RSS MB:", {k: round(v, 1) for k, v in peaks.items()})
    assert max(peaks.values()) < 100, peaks
    assert sync_redis.xlen(keys.dlq) == 0 and kept(sync_redis, record) == {}
    retried = Counter(f[b"origin_entry_id"] for _, f in sync_redis.xrange(keys.retry))
    assert len(retried) == n // 2 and max(retried.values()) == 1
