"""Helpers for the "when handlers fail" tests: a pool run in-process (:class:`PoolRun`),
one test's in-process world (:class:`Lab`: app, stream and handler names, cleanup), the
map of where every message of one handler is (:func:`where`), the ``dlq`` CLI in a
subprocess, and a redis-server of the test's own with an append-only file that can be
stopped and started again on the same port (:class:`DurableRedis`)."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from queues import outcome_counts
from queues.connection import answers
from queues.keys import OUTCOMES, PROCESSES, REGISTRY, HandlerKeys
from workers.app import App
from workers.cli.private_redis import free_port, redis_server_path
from workers.runtime.pool import Pool, consumer_name

T = TypeVar("T")

#: Long enough that no pool in these tests ever looks for abandoned entries unless a test
#: asks for it (the look happens every claim_after / 2 seconds).
NO_CLAIM = 600.0


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


# -- waiting ---------------------------------------------------------------------------

async def until(predicate: Callable[[], Awaitable[T] | T], *, within: float,
                what: str, interval: float = 0.01,
                alive: Callable[[], None] | None = None) -> T:
    """Poll ``predicate`` (sync or async) until it returns something truthy; fail after
    ``within`` s, or as soon as ``alive()`` raises (the pool under test died)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


# -- a pool in this process ------------------------------------------------------------

class PoolRun:
    """``async with PoolRun(app):`` runs ``Pool(app, app.pools[pool]).run(...)`` in a task
    of the test's event loop and stops it (first stop request, then the grace) on exit.
    A pool that died (``PoolCrashed``) fails the test at the next :meth:`until`."""

    def __init__(self, app: App, pool: str = "default", *, grace: float = 5.0) -> None:
        self.pool = Pool(app, app.pools[pool])
        self.grace = grace
        self.stop = asyncio.Event()
        self.cancel = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PoolRun:
        self.task = asyncio.create_task(self.pool.run(self.stop, self.cancel, self.grace))
        return self

    def check(self) -> None:
        """Raise if the pool is no longer running."""
        assert self.task is not None
        if self.task.done():
            error = None if self.task.cancelled() else self.task.exception()
            raise AssertionError(f"the pool stopped by itself: {error!r}") from error

    async def until(self, predicate: Callable[[], Awaitable[T] | T], *, within: float,
                    what: str, interval: float = 0.01) -> T:
        return await until(predicate, within=within, what=what, interval=interval,
                           alive=self.check)

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.stop.set()
        done, _ = await asyncio.wait([self.task], timeout=self.grace + 5)
        if not done:
            # Never await a task whose cancellation may be lost (redis-py 8.1's asyncio
            # client sometimes drops a cancel that lands mid-command): fail, don't hang.
            self.cancel.set()
            self.task.cancel()
            await asyncio.wait([self.task], timeout=5)
            raise AssertionError(f"the pool did not stop within {self.grace + 5}s of the "
                                 "stop request")
        error = None if self.task.cancelled() else self.task.exception()
        if error is not None:
            raise error


# -- one in-process test's world -------------------------------------------------------

class Lab:
    """One test's app (its own name, so its own consumer names), streams and handlers;
    :meth:`cleanup` removes every key they made."""

    def __init__(self, uid: str, redis_url: str) -> None:
        self.uid = uid
        self.redis_url = redis_url
        self.app = App(f"fail{uid}", redis_url=redis_url)
        self.streams: list[str] = []

    def stream(self, name: str) -> str:
        stream = f"fail-{name}-{self.uid}"
        self.streams.append(stream)
        return stream

    def name(self, handler: str) -> str:
        return f"fail.{handler}.{self.uid}"

    def keys(self, handler: str) -> HandlerKeys:
        return self.app.handlers[handler].keys

    def key(self, name: str) -> str:
        """A key of the test's own (a flag, a counter)."""
        return f"fail:{self.uid}:{name}"

    @property
    def consumer(self) -> str:
        """The consumer name of slot 0 of the default pool (the pool under test)."""
        return consumer_name(self.app.name, "default", 0)

    async def cleanup(self, client: aioredis.Redis) -> None:
        keys: list[Any] = [k async for k in client.scan_iter(match=f"fail:{self.uid}:*")]
        for stream in self.streams:
            keys.append(stream)
            keys += [k async for k in client.scan_iter(match=f"seawall:{{{stream}}}:*",
                                                       count=1000)]
        if keys:
            await client.delete(*keys)
        if self.app.handlers:
            await client.hdel(REGISTRY, *self.app.handlers)
            await client.hdel(OUTCOMES, *(outcome_counts.field(name, kind)
                                          for name in self.app.handlers
                                          for kind in outcome_counts.KINDS))
        mine = [f for f in await client.hkeys(PROCESSES)
                if _s(f).startswith(f"{self.app.name}:")]
        if mine:
            await client.hdel(PROCESSES, *mine)
        await self.app.aclose()


# -- where every message is ------------------------------------------------------------

def message_id(entry_id: str, fields: dict[bytes, bytes]) -> str:
    """The message id as the runtime sees it: the ``id`` field, else the origin entry id,
    else the entry id (an entry a foreign producer wrote without ``id``)."""
    raw = fields.get(b"id") or fields.get(b"origin_entry_id")
    return _s(raw) if raw else entry_id


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Where:
    """Where one handler's messages are, by message id. A message the handler completed
    is in none of these (acked, and gone from its own retry stream)."""

    pending: dict[str, int] = field(default_factory=dict)
    """delivered to the handler's group, not acked: message id -> delivery count"""
    unread: list[str] = field(default_factory=list)
    """on the user's stream, not yet delivered to the handler's group"""
    retry: list[str] = field(default_factory=list)
    """on the handler's retry stream, waiting to be read"""
    delayed: list[str] = field(default_factory=list)
    """in the handler's delayed zset"""
    dlq: list[str] = field(default_factory=list)
    """dead letters"""

    def everywhere(self) -> list[str]:
        return [*self.pending, *self.unread, *self.retry, *self.delayed, *self.dlq]


async def _group_view(client: aioredis.Redis, stream: str, group: str
                      ) -> tuple[dict[str, int], list[str]]:
    """(pending message id -> deliveries, unread message ids) of ``group`` on ``stream``."""
    entries = {_s(eid): fields for eid, fields in await client.xrange(stream)}
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return {}, []
    info = [g for g in groups if _s(g["name"]) == group]
    if not info:
        return {}, [message_id(e, f) for e, f in entries.items()]
    last = _id_key(_s(info[0]["last-delivered-id"]))
    rows = await client.xpending_range(stream, group, min="-", max="+", count=100_000)
    pending: dict[str, int] = {}
    for row in rows:
        eid = _s(row["message_id"])
        mid = message_id(eid, entries[eid]) if eid in entries else f"<trimmed {eid}>"
        assert mid not in pending, f"{mid} pending twice on {stream}"
        pending[mid] = int(row["times_delivered"])
    unread = [message_id(e, f) for e, f in entries.items() if _id_key(e) > last]
    return pending, unread


def _delayed_id(member: bytes) -> str:
    _, _source, entry_id, flat = json.loads(member)
    fields = {flat[i].encode(): flat[i + 1].encode() for i in range(0, len(flat), 2)}
    return message_id(entry_id, fields)


async def where(client: aioredis.Redis, keys: HandlerKeys) -> Where:
    """Every place a message of this handler can be, read from Redis."""
    pending, unread = await _group_view(client, keys.stream, keys.group)
    retry_pending, retry_unread = await _group_view(client, keys.retry, keys.group)
    overlap = set(pending) & set(retry_pending)
    assert not overlap, f"pending on both the stream and the retry stream: {overlap}"
    pending.update(retry_pending)
    delayed = [_delayed_id(m) for m in await client.zrange(keys.delayed, 0, -1)]
    dlq = [message_id(_s(e), f) for e, f in await client.xrange(keys.dlq)]
    return Where(pending, unread, retry_unread, delayed, dlq)


async def delayed_scores(client: aioredis.Redis, keys: HandlerKeys
                         ) -> dict[tuple[str, int], int]:
    """(message id, attempt it will be) -> due time (ms) of every retry in the delayed zset."""
    out: dict[tuple[str, int], int] = {}
    for member, score in await client.zrange(keys.delayed, 0, -1, withscores=True):
        _, _, _, flat = json.loads(member)
        attempt = int(dict(zip(flat[::2], flat[1::2], strict=True))["attempt"])
        out[(_delayed_id(member), attempt)] = int(score)
    return out


class DelayedWatch:
    """``async with DelayedWatch(client, keys) as watch:`` reads the handler's delayed zset
    every few ms in the background; ``watch.seen`` keeps each retry's due time (ms) by
    (message id, attempt it will be), so a test reads the backoff Redis was given instead
    of timing anything.

    It stops on a flag between reads, not by cancelling a read: redis-py 8.1's asyncio
    client sometimes drops a cancel that lands mid-command, and awaiting such a task hangs
    the test."""

    def __init__(self, client: aioredis.Redis, keys: HandlerKeys) -> None:
        self.client = client
        self.keys = keys
        self.seen: dict[tuple[str, int], int] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            for key, due in (await delayed_scores(self.client, self.keys)).items():
                assert self.seen.setdefault(key, due) == due, f"{key} rescheduled"
            await asyncio.sleep(0.003)

    async def __aenter__(self) -> DelayedWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._stop.set()
        done, _ = await asyncio.wait([self._task], timeout=5)
        if not done:
            self._task.cancel()
            raise AssertionError("the delayed-zset watch did not stop within 5 s")
        self._task.result()


async def dead_letters(client: aioredis.Redis, keys: HandlerKeys
                       ) -> list[tuple[str, dict[str, str]]]:
    """(entry id, fields as text) of every dead letter, oldest first."""
    return [(_s(e), {_s(k): _s(v) for k, v in f.items()})
            for e, f in await client.xrange(keys.dlq)]


# -- the dlq CLI -----------------------------------------------------------------------

def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SEAWALL_REDIS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def dlq_command(redis_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "workers", "dlq", *args, "--redis-url", redis_url]


async def run_dlq(redis_url: str, *args: str, within: float = 30.0
                  ) -> subprocess.CompletedProcess[str]:
    """``python -m workers dlq ARGS`` in a subprocess (off the event loop), finished."""
    return await asyncio.to_thread(
        subprocess.run, dlq_command(redis_url, *args), env=cli_env(), capture_output=True,
        text=True, timeout=within, check=False, stdin=subprocess.DEVNULL)


# -- a redis-server of the test's own, with an append-only file ------------------------

class DurableRedis:
    """A redis-server on a free loopback port that keeps every write in an append-only
    file fsynced at each command, in ``directory``; :meth:`stop` and :meth:`start` again
    bring it back on the same port with the same data."""

    def __init__(self, directory: Path) -> None:
        found = redis_server_path()
        if found is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.executable = found
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None, "already running"
        self.starts += 1
        log = self.directory / f"redis-{self.starts}.log"
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--dir", str(self.directory), "--logfile", str(log), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while not answers(self.url, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}: {tail}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis fsyncs the append-only file and exits) and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        process.wait(timeout)

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)
