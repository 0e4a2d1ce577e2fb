"""Helpers for the circuit-breaker end-to-end tests: an app module whose handler calls a
"dependency" simulated with Redis keys (:data:`APP`), the test's side of that dependency
(:class:`Dependency`: make it fail, hang, be slow or recover; count its calls), the breaker
hash as the fleet sees it (:func:`breaker`), group lag, and the ``breaker`` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from e2e.support import E2E, Proc, wait_until
from workers.app import App

POOL = "p"

APP = """
from tenacity import stop_after_attempt, wait_fixed

from workers import CircuitBreaker, NonRetryable


class Order(BaseModel):
    n: int
    kind: str = "ok"


class DependencyDown(Exception):
    pass


class BusinessError(Exception):
    pass


app.pool({pool!r}, processes=2, concurrency={concurrency}, batch_size={batch_size},
         claim_after=30)


async def dependency(order: Order, ctx: Context) -> None:
    # The "dependency". Every call is counted and logged, with the state the fleet's
    # breaker was in at that moment: "pid time message-id attempt state".
    r = aredis()
    # One MULTI on one Redis; a cluster refuses MULTI across slots, and splits this.
    async with r.pipeline(transaction=not isinstance(r, aioredis.RedisCluster)) as pipe:
        pipe.incr(PREFIX + "calls")
        pipe.hget({breaker_key!r}, "state")
        pipe.get(PREFIX + "slow")
        pipe.get(PREFIX + "stagger")
        pipe.exists(PREFIX + "down")
        number, state, slow, stagger, down = await pipe.execute()
    state = state.decode() if state else "closed"
    await r.rpush(PREFIX + "call-log", f"{{os.getpid()}} {{time.time():.6f}} "
                  f"{{ctx.message_id}} {{ctx.attempt}} {{state}}")
    while await r.exists(PREFIX + "hang"):
        await asyncio.sleep(0.02)
    if slow:
        await asyncio.sleep(float(slow))
    if stagger and number % 2:
        await asyncio.sleep(float(stagger))  # odd calls take longer than even ones
    if down:
        raise DependencyDown("the dependency is down")


async def degrade(order: Order, ctx: Context) -> None:
    r = aredis()
    await r.hincrby(PREFIX + "fallback", ctx.message_id, 1)
    await r.sadd(PREFIX + "fallback-pids", os.getpid())


@app.handler({stream!r}, pool={pool!r}, name={handler!r}, timeout={timeout},
             stop={stop}, wait={wait}, breaker=CircuitBreaker({breaker}), {options})
async def handle(order: Order, ctx: Context) -> None:
    if order.kind == "business":
        await aredis().hincrby(PREFIX + "business", ctx.message_id, 1)
        raise BusinessError(f"order {{order.n}} is refused")
    if order.kind == "fatal":
        raise NonRetryable(f"order {{order.n}} can never succeed")
    await dependency(order, ctx)
    await aredis().hincrby(PREFIX + "handled", ctx.message_id, 1)

"""


def write_breaker_app(e2e: E2E, stream: str, handler: str, *, breaker: str,
                      concurrency: int = 4, batch_size: int | None = None,
                      timeout: float = 10.0,
                      stop: str = "stop_after_attempt(50)", wait: str = "wait_fixed(0.2)",
                      fallback: bool = False) -> str:
    """The test's app: pool ``p`` with two processes, one handler named ``handler`` on
    ``stream`` whose breaker is ``CircuitBreaker(<breaker>)``; returns ``module:app``.
    A generous retry policy by default, so nothing is dead-lettered while a test runs.

    ``batch_size`` defaults to half the concurrency, so that a fetch reading both the stream
    and the retry stream stays within the pool's slots; the batch larger than the free slots
    is tested on its own (``test_after_the_breaker_closes_a_backlog_and_retries_drain``)."""
    if batch_size is None:
        batch_size = max(1, concurrency // 2)
    options = "fallback=degrade" if fallback else ""
    return e2e.write_app(textwrap.dedent(APP).format(
        pool=POOL, concurrency=concurrency, batch_size=batch_size, stream=stream,
        handler=handler, timeout=timeout, stop=stop, wait=wait, breaker=breaker, options=options,
        breaker_key=breaker_key(stream, handler)))


def breaker_key(stream: str, handler: str) -> str:
    """The breaker hash, spelled as DESIGN.md's key table says."""
    return f"seawall:{{{stream}}}:breaker:{handler}"


@dataclass(frozen=True)
class Call:
    """One call to the dependency, as the handler logged it."""

    pid: int
    at: float
    """time.time() when it started"""
    message_id: str
    attempt: int
    breaker: str
    """the fleet's breaker state when it started"""


def _s(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@dataclass
class Dependency:
    """The test's side of the simulated dependency and of what the handlers recorded."""

    e2e: E2E

    @property
    def client(self) -> redis.Redis:
        return self.e2e.client

    def set(self, flag: str, value: str = "1") -> None:
        """``down`` (calls raise), ``hang`` (calls block), ``slow`` (calls sleep value s)."""
        self.client.set(self.e2e.key(flag), value)

    def clear(self, flag: str) -> None:
        self.client.delete(self.e2e.key(flag))

    def calls(self) -> int:
        return int(self.client.get(self.e2e.key("calls")) or 0)

    def call_log(self) -> list[Call]:
        """Every call, in order."""
        out = []
        for raw in self.client.lrange(self.e2e.key("call-log"), 0, -1):
            pid, at, mid, attempt, breaker_state = _s(raw).split()
            out.append(Call(int(pid), float(at), mid, int(attempt), breaker_state))
        return out

    def calls_and_state(self, stream: str, handler: str) -> tuple[int, str]:
        """(calls so far, the breaker's state), read atomically (MULTI; on a cluster, which
        refuses MULTI across slots, one after the other)."""
        with self.client.pipeline(
                transaction=not isinstance(self.client, redis.RedisCluster)) as pipe:
            pipe.get(self.e2e.key("calls"))
            pipe.hget(breaker_key(stream, handler), "state")
            calls, state = pipe.execute()
        return int(calls or 0), _s(state) if state else "closed"

    def recorded(self, name: str) -> dict[str, int]:
        """A hash message id -> times, written by the app (``handled``, ``fallback``...)."""
        return {_s(k): int(v) for k, v in self.client.hgetall(self.e2e.key(name)).items()}


def breaker(client: redis.Redis, stream: str, handler: str) -> dict[str, str]:
    """HGETALL of the breaker hash, as every process of the fleet sees it."""
    raw = client.hgetall(breaker_key(stream, handler))
    return {_s(k): _s(v) for k, v in raw.items()}


def state(client: redis.Redis, stream: str, handler: str) -> str:
    return breaker(client, stream, handler).get("state", "closed")


def leases(snapshot: dict[str, str]) -> dict[str, tuple[int, int]]:
    """lease id -> (permits, expires ms) of a breaker hash."""
    out = {}
    for field, value in snapshot.items():
        if field.startswith("lease:"):
            permits, expires = value.split(":")
            out[field[len("lease:"):]] = (int(permits), int(expires))
    return out


def lag(client: redis.Redis, stream: str, group: str) -> int:
    """XINFO GROUPS lag: entries of ``stream`` not yet delivered to ``group``."""
    [info] = [g for g in client.xinfo_groups(stream) if _s(g["name"]) == group]
    return int(info["lag"])


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def settled(client: redis.Redis, stream: str, handler: str) -> dict[str, int]:
    """Where messages could still be besides done: pending on the stream and on the retry
    stream, unread on either, delayed, dead-lettered (all zero when everything is done)."""
    prefix = f"seawall:{{{stream}}}"
    retry = f"{prefix}:retry:{handler}"
    out = {"pending": int(client.xpending(stream, handler)["pending"]), "lag": lag(client, stream,
                                                                                   handler),
           "delayed": int(client.zcard(f"{prefix}:delayed:{handler}")),
           "dlq": int(client.xlen(f"{prefix}:dlq:{handler}")),
           "retry": int(client.xlen(retry))}
    return out


def dead_letters(client: redis.Redis, stream: str, handler: str) -> list[dict[str, str]]:
    rows: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
        f"seawall:{{{stream}}}:dlq:{handler}")
    return [{_s(k): _s(v) for k, v in fields.items()} for _, fields in rows]


def wait_breaker(e2e: E2E, stream: str, handler: str, until: Callable[[dict[str, str]], bool],
                 *, timeout: float, what: str) -> dict[str, str]:
    """Poll the breaker hash until ``until(hash)``; returns that hash."""
    found: list[dict[str, str]] = []

    def check() -> bool:
        found[:] = [breaker(e2e.client, stream, handler)]
        return until(found[0])

    wait_until(check, timeout=timeout, what=what, details=e2e.all_logs)
    return found[0]


def restarted(run: Proc, before: set[int], timeout: float = 10) -> int:
    """The pid of the pool process the supervisor ``run`` started in place of a dead one."""
    fresh: list[int] = []

    def check() -> bool:
        fresh[:] = [p for p in run.children() if p not in before]
        return len(fresh) == 1

    wait_until(check, timeout=timeout, what="the restarted pool process", details=run.logs)
    return fresh[0]


def cli(e2e: E2E, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m workers ARGS --redis-url URL``, finished, with its output."""
    done = subprocess.run([sys.executable, "-m", "workers", *args, "--redis-url",
                           e2e.redis_url], cwd=e2e.tmp, capture_output=True, text=True,
                          timeout=30, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def breaker_list(e2e: E2E, handler: str) -> dict[str, Any]:
    """The row of ``seawall breaker list --json`` for ``handler``."""
    rows = json.loads(cli(e2e, "breaker", "list", "--json").stdout)
    [row] = [r for r in rows if r["handler"] == handler]
    return dict(row)


def status_breaker(e2e: E2E, handler: str) -> str | None:
    """The breaker column of ``seawall status --json`` for ``handler``."""
    [row] = [h for h in e2e.status()["handlers"] if h["name"] == handler]
    return row["breaker"]  # type: ignore[no-any-return]


class Publisher:
    """``with Publisher(e2e, stream) as p:`` publishes one message every ``every`` s in a
    thread (with a producer of its own) until the block ends; ``p.ids`` are their ids."""

    def __init__(self, e2e: E2E, stream: str, every: float = 0.02) -> None:
        self.app = App(e2e.app_name, redis_url=e2e.redis_url)
        self.stream = stream
        self.every = every
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every):
            self.ids.append(self.app.publish(self.stream, {"n": n}))
            n += 1

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.app.close()
