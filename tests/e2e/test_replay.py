"""Replaying dead letters with ``python -m workers dlq replay``: a dry run changes nothing;
after a fix, a replay hands every dead letter back to its own handler (and to no other
handler on the stream) exactly once; and a replay killed half-way leaves every message in
exactly one place, so running it again finishes the job without doubling anything.

The dead letters are made by a real pool (in this process) whose handler raises
``NonRetryable``; the CLI runs in a subprocess, as an operator would run it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

from e2e.failure_helpers import (
    Lab,
    PoolRun,
    Where,
    cli_env,
    dlq_command,
    message_id,
    run_dlq,
    until,
    where,
)
from queues.keys import REGISTRY, HandlerKeys
from workers.context import Context
from workers.errors import NonRetryable

pytestmark = pytest.mark.slow

N = 1_000


class Order(BaseModel):
    n: int


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 64}


async def _ids(client: aioredis.Redis, key: str) -> list[str]:
    """Message ids of the entries of stream ``key``, in order."""
    return [message_id(e.decode(), f) for e, f in await client.xrange(key)]


async def _dead_lettered(lab: Lab, client: aioredis.Redis, n: int) -> tuple[str, list[str]]:
    """Given ``n`` messages dead-lettered by a real pool (then stopped): the handler's name
    and the message ids. Nothing runs afterwards."""
    stream, name = lab.stream("orders"), lab.name("ship")

    @lab.app.handler(stream, name=name, breaker=None)
    async def ship(order: Order) -> None:
        raise NonRetryable(f"order {order.n}: warehouse rejects it")

    keys = lab.keys(name)
    mids = await lab.app.apublish_many(stream, ({"n": i} for i in range(n)))
    async with PoolRun(lab.app) as pool:
        await pool.until(lambda: _len_is(client, keys.dlq, n), within=30,
                         what=f"{n} dead letters")
        await pool.until(lambda: client.hexists(REGISTRY, name), within=10,
                         what="the handler in the registry")
        await pool.until(lambda: _only_in_dlq(client, keys, n), within=10, what="the acks")
    return name, mids


async def _len_is(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.xlen(key)) == n


async def _only_in_dlq(client: aioredis.Redis, keys: HandlerKeys, n: int) -> bool:
    place = await where(client, keys)
    return len(place.dlq) == n == len(place.everywhere())


async def test_a_dry_run_changes_nothing(lab: Lab, aredis: aioredis.Redis,
                                         redis_url: str) -> None:
    name, mids = await _dead_lettered(lab, aredis, 20)
    keys = lab.keys(name)
    before = await aredis.xrange(keys.dlq)

    # When an operator asks what a replay of everything would do,
    done = await run_dlq(redis_url, "replay", "--handler", name, "--all", "--dry-run")

    # then it says how many would move, and where,
    assert done.returncode == 0, done.stderr
    assert f"dry run: would replay 20 dead letter(s) of {name} to {keys.retry}" in done.stdout
    # and nothing moved: same dead letters, empty retry stream.
    assert await aredis.xrange(keys.dlq) == before
    assert await aredis.xlen(keys.retry) == 0
    assert await where(aredis, keys) == Where(dlq=mids)


async def test_a_replay_after_the_fix_hands_every_message_to_that_handler_once(
    lab: Lab, aredis: aioredis.Redis, redis_url: str,
) -> None:
    stream = lab.stream("orders")
    ship_name, audit_name = lab.name("ship"), lab.name("audit")
    broken = lab.key("warehouse-broken")
    failed: Counter[str] = Counter()
    shipped: Counter[str] = Counter()
    shipped_as: dict[str, tuple[int, str]] = {}
    audited: Counter[str] = Counter()

    # Given a handler that fails for good while a flag is set in Redis, and a second
    # handler on the same stream that always works,
    @lab.app.handler(stream, name=ship_name, breaker=None)
    async def ship(order: Order, ctx: Context) -> None:
        if await aredis.exists(broken):
            failed[ctx.message_id] += 1
            raise NonRetryable("warehouse API rejects the order")
        shipped[ctx.message_id] += 1
        shipped_as[ctx.message_id] = (ctx.attempt, ctx.origin_entry_id)

    @lab.app.handler(stream, name=audit_name, breaker=None)
    async def audit(order: Order, ctx: Context) -> None:
        audited[ctx.message_id] += 1

    keys, audit_keys = lab.keys(ship_name), lab.keys(audit_name)
    await aredis.set(broken, 1)
    mids = await lab.app.apublish_many(stream, ({"n": n} for n in range(N)))
    entry_of = {message_id(e.decode(), f): e.decode() for e, f in await aredis.xrange(stream)}
    async with PoolRun(lab.app) as pool:
        # ...so all 1,000 messages end in its dead letters,
        await pool.until(lambda: _only_in_dlq(aredis, keys, N), within=30,
                         what="1,000 dead letters")
        await pool.until(lambda: len(audited) == N, within=30, what="the audit handler")
        assert set(failed) == set(mids) and set(failed.values()) == {1}
        assert shipped == Counter()

        # When the handler is fixed and an operator replays every dead letter,
        await aredis.delete(broken)
        done = await run_dlq(redis_url, "replay", "--handler", ship_name, "--all", "--yes")
        assert done.returncode == 0, done.stderr
        assert f"replayed {N} dead letter(s) of {ship_name}" in done.stdout

        # then each message is handled once more by that handler, and succeeds,
        await pool.until(lambda: len(shipped) == N, within=30, what="every replayed message")
        await pool.until(lambda: _settled(aredis, keys), within=10, what="the acks")

    assert set(shipped) == set(mids) and set(shipped.values()) == {1}
    assert set(failed.values()) == {1}, "and never failed again"
    # as attempt 1 of the same message (same id, same origin entry on the stream);
    assert shipped_as == {mid: (1, entry_of[mid]) for mid in mids}
    # the dead letters are gone and nothing is left anywhere;
    assert await aredis.xlen(keys.dlq) == 0
    assert await where(aredis, keys) == Where()
    # the other handler saw each message exactly once: never the replays.
    assert set(audited) == set(mids) and set(audited.values()) == {1}
    assert await where(aredis, audit_keys) == Where()
    assert await aredis.xlen(audit_keys.retry) == 0


async def _settled(client: aioredis.Redis, keys: HandlerKeys) -> bool:
    return not (await where(client, keys)).everywhere()


async def test_a_replay_killed_half_way_neither_loses_nor_doubles_a_message(
    lab: Lab, aredis: aioredis.Redis, redis_url: str, tmp_path: Path,
) -> None:
    name, mids = await _dead_lettered(lab, aredis, N)
    keys = lab.keys(name)
    origin = {message_id(e.decode(), f): e.decode() for e, f in await aredis.xrange(keys.stream)}

    # Given a slow replay (200 a second) of 1,000 dead letters, with no pool running,
    log = tmp_path / "replay.log"
    with log.open("wb") as out:
        replay = await asyncio.create_subprocess_exec(
            *dlq_command(redis_url, "replay", "--handler", name, "--all", "--yes",
                         "--rate", "200"),
            env=cli_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # when it is SIGKILLed part of the way through (after about a second),
        await until(lambda: _at_least(aredis, keys.retry, 200), within=15,
                    what="the replay to get going")
        replay.send_signal(signal.SIGKILL)
        await asyncio.wait_for(replay.wait(), 10)
    finally:
        if replay.returncode is None:
            replay.kill()
            await replay.wait()
    assert replay.returncode == -signal.SIGKILL, log.read_text()

    # then every message is in exactly one place, the dead letters or the retry stream:
    # none lost, none in both, none twice.
    in_dlq, in_retry = await _ids(aredis, keys.dlq), await _ids(aredis, keys.retry)
    assert 0 < len(in_retry) < N, "killed part of the way"
    assert len(in_dlq) + len(in_retry) == N
    assert Counter(in_dlq + in_retry) == Counter(mids)

    # When the replay is run again, it finishes: each message is in the retry stream exactly
    # once, as attempt 1, pointing at its original entry, and the dead letters are empty.
    started = time.monotonic()
    done = await run_dlq(redis_url, "replay", "--handler", name, "--all", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"replayed {len(in_dlq)} dead letter(s) of {name}" in done.stdout
    assert time.monotonic() - started < 20
    rows = await aredis.xrange(keys.retry)
    assert Counter(message_id(e.decode(), f) for e, f in rows) == Counter(mids)
    for _, fields in rows:
        mid = fields[b"id"].decode()
        assert fields[b"attempt"] == b"1"
        assert fields[b"origin_entry_id"].decode() == origin[mid]
        assert fields[b"replayed_from"]
        assert not any(k.startswith(b"dlq_") for k in fields)
    assert await aredis.xlen(keys.dlq) == 0
    # Where the handler will find them: waiting in its retry stream, nowhere else.
    place = await where(aredis, keys)
    assert Counter(place.retry) == Counter(mids)
    assert place == Where(retry=place.retry)


async def _at_least(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.xlen(key)) >= n
