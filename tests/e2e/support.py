"""Helpers for the end-to-end tests: one test's world (:class:`E2E`: its app module, app
name, streams, processes and keys), waiting, finding processes, and the ledger that says
where every message of a stream is (acked, pending, or not read yet)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from queues import outcome_counts
from queues.keys import OUTCOMES, PROCESSES, REGISTRY
from workers.app import App

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = 0.05,
               what: str = "condition", details: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


# -- processes -------------------------------------------------------------------------

def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie is dead already
        return None
    return int(fields[1])


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (the pool processes of a supervisor)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ppid(int(entry)) == pid:
            out.append(int(entry))
    return sorted(out)


def tagged_pids(tag: str) -> list[int]:
    """Every live process whose environment carries ``SEAWALL_E2E_TAG=tag``: a test's
    supervisors and pool processes, even those a killed supervisor left behind."""
    needle = f"SEAWALL_E2E_TAG={tag}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0") and _ppid(int(entry)) is not None:
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    return _ppid(pid) is not None


# -- where every message is ------------------------------------------------------------

def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Ledger:
    """One handler's view of one stream: every published message is in exactly one of
    ``done`` (acked), ``pending`` (delivered, not acked) or ``unread`` (never delivered)."""

    published: set[int]
    pending: dict[int, tuple[str, int]]
    """message n -> (consumer, delivery count)"""
    unread: set[int]

    @property
    def done(self) -> set[int]:
        return self.published - set(self.pending) - self.unread


def _last_delivered(client: redis.Redis, stream: str, group: str) -> tuple[int, int]:
    [info] = [g for g in client.xinfo_groups(stream) if g["name"] == group.encode()]
    return _id(info["last-delivered-id"])


def ledger(client: redis.Redis, stream: str, group: str) -> Ledger:
    """A consistent snapshot while pools keep reading: the pending list is taken between
    two looks at the group's last delivered id, again until no read came in between (a
    read between the look and the pending list would show entries both unread and
    pending; on a cluster's slower round trips it did)."""
    n_of: dict[bytes, int] = {}
    for entry_id, fields in client.xrange(stream):
        n_of[entry_id] = int(json.loads(fields[b"payload"])["n"])
    for _ in range(100):
        last = _last_delivered(client, stream, group)
        rows = client.xpending_range(stream, group, min="-", max="+", count=len(n_of) + 1)
        if _last_delivered(client, stream, group) == last:
            break
    pending = {n_of[r["message_id"]]: (r["consumer"].decode(), int(r["times_delivered"]))
               for r in rows}
    unread = {n for entry_id, n in n_of.items() if _id(entry_id) > last}
    assert not unread & set(pending), "an entry cannot be both pending and unread"
    return Ledger(set(n_of.values()), pending, unread)


def pending_count(client: redis.Redis, stream: str, group: str) -> int:
    return int(client.xpending(stream, group)["pending"])


def counts(client: redis.Redis, key: str) -> Counter[int]:
    """A hash of message n -> times handled (HINCRBY by the handlers)."""
    return Counter({int(k): int(v) for k, v in client.hgetall(key).items()})


def listed(client: redis.Redis, key: str) -> list[str]:
    return [v.decode() for v in client.lrange(key, 0, -1)]


def status_of(report: dict[str, Any], app: str) -> list[dict[str, Any]]:
    """The heartbeats of ``app``'s pool processes in ``seawall status --json``."""
    return [p for pool in report["pools"] if pool["app"] == app for p in pool["processes"]]


# -- one test's world ------------------------------------------------------------------

@dataclass
class Proc:
    """A process this test started, with its output in a file."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def logs(self, tail: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pid {self.pid} still running after {timeout}s\n"
                                 f"{self.logs()}") from None

    def children(self) -> list[int]:
        return children_of(self.pid)

    def wait_children(self, count: int, timeout: float = 15) -> list[int]:
        return wait_until(lambda: len(kids := self.children()) == count and kids,
                          timeout=timeout, what=f"{count} pool processes",
                          details=self.logs)


@dataclass
class E2E:
    """One test's world: a unique app name, streams, key prefix and app module."""

    uid: str
    tmp: Path
    redis_url: str
    client: redis.Redis
    procs: list[Proc] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    handler_names: list[str] = field(default_factory=list)
    _app: App | None = None

    @property
    def app_name(self) -> str:
        return f"e2e{self.uid}"

    def key(self, name: str) -> str:
        """A key the test's handlers write to."""
        return f"e2e:{self.uid}:{name}"

    def stream(self, name: str) -> str:
        stream = f"e2e-{name}-{self.uid}"
        self.streams.append(stream)
        return stream

    def handler(self, name: str) -> str:
        handler = f"e2e.{name}.{self.uid}"
        self.handler_names.append(handler)
        return handler

    def consumer(self, pool: str, slot: int) -> str:
        return f"{self.app_name}:{pool}:{os.uname().nodename}:{slot}"

    @property
    def app(self) -> App:
        """A producer (an App with no handlers) for publishing from the test."""
        if self._app is None:
            self._app = App(self.app_name, redis_url=self.redis_url)
        return self._app

    def write_app(self, source: str) -> str:
        """Write the test's app module: ``source`` (pools and handlers) goes after a header
        that defines ``app``, the payload model ``Msg`` (``n``, ``sent_at``), ``PREFIX``
        (the test's key prefix), ``SLEEP`` (from ``E2E_SLEEP``), ``sync_redis`` and
        ``aredis()`` (clients handlers record what they handled with)."""
        module = f"app_{self.uid}"
        header = textwrap.dedent(f"""\
            import asyncio, os, threading, time
            from typing import Any

            import redis
            import redis.asyncio as aioredis
            from pydantic import BaseModel

            from queues.connection import connect, connect_sync
            from workers import App, Context

            REDIS_URL = {self.redis_url!r}
            PREFIX = {f"e2e:{self.uid}:"!r}
            SLEEP = float(os.environ.get("E2E_SLEEP", "0"))
            app = App({self.app_name!r})
            sync_redis = connect_sync(REDIS_URL)  # any URL seawall takes: cluster, sentinel
            _async_redis = None


            def aredis():
                global _async_redis
                if _async_redis is None:
                    _async_redis = connect(REDIS_URL)
                return _async_redis


            class Msg(BaseModel):
                n: int
                sent_at: float = 0.0

        """)
        (self.tmp / f"{module}.py").write_text(header + textwrap.dedent(source))
        return f"{module}:app"

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("SEAWALL_REDIS_URL", None)
        env["SEAWALL_E2E_TAG"] = self.uid
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def _start(self, cmd: Sequence[str], name: str, env: dict[str, str] | None) -> Proc:
        log_path = self.tmp / f"{name}-{len(self.procs)}.log"
        with log_path.open("wb") as out:
            popen = subprocess.Popen(list(cmd), cwd=self.tmp, env=self._env(env), stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(popen, log_path)
        self.procs.append(proc)
        return proc

    def run(self, app_path: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """``seawall run APP ARGS`` in a subprocess (the supervisor)."""
        return self._start([sys.executable, "-m", "workers", "run", app_path,
                            "--redis-url", self.redis_url, *args], "run", env)

    def pool_process(self, app_path: str, pool: str, slot: int, *args: str,
                     env: dict[str, str] | None = None) -> Proc:
        """One pool process without a supervisor (nothing restarts it)."""
        extra = {"SEAWALL_REDIS_URL": self.redis_url, **(env or {})}
        return self._start([sys.executable, "-m", "workers.runtime.process", app_path, pool,
                            str(slot), *args], f"pool-{pool}-{slot}", extra)

    def status(self) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "workers", "status", "--json",
                               "--redis-url", self.redis_url], cwd=self.tmp,
                              env=self._env(None), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def wait_pool_ready(self, pool: str, slot: int = 0, timeout: float = 15) -> int:
        """Wait for the pool process's first heartbeat; returns its pid."""
        consumer = self.consumer(pool, slot)

        def beat() -> int | None:
            raw = self.client.hget(PROCESSES, consumer)
            return int(json.loads(raw)["pid"]) if raw else None

        return wait_until(beat, timeout=timeout, what=f"{consumer} to start",
                          details=self.all_logs)

    def all_logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name} (pid {p.pid})\n{p.logs()}" for p in self.procs)

    def kill_all(self) -> None:
        for _ in range(20):
            pids = tagged_pids(self.uid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
            proc.popen.wait(10)

    def cleanup(self) -> None:
        if self._app is not None:
            self._app.close()
        keys = list(self.client.scan_iter(match=f"e2e:{self.uid}:*", count=1000))
        for stream in self.streams:
            keys.append(stream)
            keys += self.client.scan_iter(match=f"seawall:{{{stream}}}:*", count=1000)
        if keys:
            self.client.delete(*keys)
        if self.handler_names:
            self.client.hdel(REGISTRY, *self.handler_names)
            self.client.hdel(OUTCOMES, *(outcome_counts.field(name, kind)
                                         for name in self.handler_names
                                         for kind in outcome_counts.KINDS))
        mine = [f for f in self.client.hkeys(PROCESSES)
                if f.decode().startswith(f"{self.app_name}:")]
        if mine:
            self.client.hdel(PROCESSES, *mine)
