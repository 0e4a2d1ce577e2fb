"""Least privilege: the whole flow runs as the Redis user ``seawall acl`` describes, and that
user can do nothing else.

Each test starts a redis-server of its own. The user's line is printed by ``seawall acl``
and applied as an operator would, through ``redis-cli``; the pools, the supervisor, the
producer and every CLI command then use that user only. The test's own bookkeeping
(what the handlers did) is written with the default user, which is not seawall's traffic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from e2e.own_redis import OwnRedis, own_redis
from e2e.support import E2E, wait_until
from queues.keys import HandlerKeys, SagaKeys
from workers.app import App
from workers.cli.acl import acl_rules, key_patterns
from workers.cli.private_redis import free_port

# The checkout saga app of the saga tests (tests/sagas is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sagas"))
from saga_app import CheckoutOrder, app_source, twin

pytestmark = pytest.mark.slow

PASSWORD = "acl-test-Pw-5d1c9e"
USER = "worker"

SOURCE = """
from tenacity import stop_after_attempt, wait_fixed

from workers import CircuitBreaker, NonRetryable

STREAM, AUDIT, WORK, AUDITOR = {names!r}
app.pool("default", concurrency=8, claim_after=30)


@app.handler(STREAM, name=WORK, stop=stop_after_attempt(3), wait=wait_fixed(0.2),
             idempotent=True, breaker=CircuitBreaker(window=200, min_calls=200))
async def work(msg: Msg, ctx: Context) -> None:
    if msg.n % 10 == 3 and ctx.attempt == 1:
        raise ConnectionError("flaky on the first attempt")
    if msg.n % 10 == 7 and await aredis().exists(PREFIX + "broken"):
        raise NonRetryable("the dependency refused it")
    await aredis().hincrby(PREFIX + "work", str(msg.n), 1)
    await ctx.publish(AUDIT, Msg(n=msg.n))


@app.handler(AUDIT, name=AUDITOR, breaker=None)
async def audit(msg: Msg) -> None:
    await aredis().hincrby(PREFIX + "audit", str(msg.n), 1)

"""


def cli(world: E2E, url: str | None, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """``python -m workers ARGS [--redis-url URL]`` in the test's directory, finished."""
    where = ["--redis-url", url] if url is not None else []
    return subprocess.run([sys.executable, "-m", "workers", *args, *where],
                          cwd=world.tmp, capture_output=True, text=True, timeout=60,
                          check=False, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def hash_counts(client: redis.Redis, key: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in client.hgetall(key).items()}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OwnRedis]:
    with own_redis(tmp_path) as found:
        yield found


@pytest.fixture
def world(tmp_path: Path, uid: str, server: OwnRedis) -> Iterator[E2E]:
    admin = server.client()
    found = E2E(uid, tmp_path, server.url, admin)
    try:
        yield found
    finally:
        found.kill_all()
        if found._app is not None:
            found._app.close()
        admin.close()


def apply_with_redis_cli(server: OwnRedis, line: str) -> None:
    """Pipe the line into redis-cli, as docs/security.md tells an operator to."""
    done = subprocess.run(["redis-cli", "-p", str(server.port)], input=line + "\n",
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.stdout.strip() == "OK", (done.stdout, done.stderr)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def denials(admin: redis.Redis) -> set[tuple[str, str]]:
    """(reason, object) of every ACL denial Redis logged for the user."""
    out = set()
    for entry in admin.acl_log(count=1000):
        entry = {_text(k): v for k, v in entry.items()}
        if _text(entry.get("username")) == USER:
            out.add((_text(entry["reason"]), _text(entry["object"])))
    return out


def test_the_whole_flow_runs_as_the_least_privileged_user(world: E2E, server: OwnRedis) -> None:
    admin = world.client
    stream, audit_stream = world.stream("orders"), world.stream("audit")
    work, auditor = world.handler("work"), world.handler("audit")
    saga_streams = [world.stream(s) for s in ("pay", "stock", "ship")]
    saga_name = f"checkout{world.uid}"
    app_path = world.write_app(
        SOURCE.format(names=(stream, audit_stream, work, auditor))
        + app_source(saga_name, saga_streams))

    # Given the user seawall acl describes, applied through redis-cli (the password comes
    # from the environment and never shows),
    printed = cli(world, None, "acl", app_path, "--user", USER, "--password-env",
                  "ACL_TEST_PASSWORD", env={"ACL_TEST_PASSWORD": PASSWORD})
    line = ok(printed).strip()
    assert PASSWORD not in printed.stdout + printed.stderr
    apply_with_redis_cli(server, line)
    url = server.url_for(USER, PASSWORD)
    admin.set(world.key("broken"), 1)
    admin.acl_log_reset()

    # when seawall run, a producer and the CLI use only that user,
    run = world._start([sys.executable, "-m", "workers", "run", app_path, "--redis-url", url,
                        "--metrics-port", str(free_port()), "--log-format", "text"], "run",
                       None)
    world.wait_pool_ready("default", timeout=60)
    world.wait_pool_ready("sagas", timeout=60)
    producer = App(f"{world.app_name}p", redis_url=url)
    try:
        producer.publish_many(stream, ({"n": n} for n in range(30)))

        # then messages are handled, retried, dead-lettered,
        keys = HandlerKeys(stream, work)
        failing = {n for n in range(30) if n % 10 == 7}
        wait_until(lambda: set(hash_counts(admin, world.key("work"))) == set(range(30)) - failing
                   and admin.xlen(keys.dlq) == len(failing), timeout=60,
                   what="handled and dead-lettered", details=world.all_logs)

        # replayed from the CLI,
        admin.delete(world.key("broken"))
        assert "replayed 3 dead letter(s)" in ok(cli(world, url, "dlq", "replay", "--handler",
                                                     work, "--all", "--yes"))
        wait_until(lambda: set(hash_counts(admin, world.key("work"))) == set(range(30)),
                   timeout=60, what="the replayed messages", details=world.all_logs)

        # stopped by a breaker an operator opens, and resumed when it is closed,
        ok(cli(world, url, "breaker", "open", work))
        time.sleep(4)  # every consumer hears of it within a second or two
        producer.publish_many(stream, ({"n": n} for n in range(100, 105)))
        time.sleep(2)
        assert not set(hash_counts(admin, world.key("work"))) & set(range(100, 105))
        assert "forced_open" in ok(cli(world, url, "breaker", "list"))
        ok(cli(world, url, "breaker", "close", work))
        everything = set(range(30)) | set(range(100, 105))
        wait_until(lambda: set(hash_counts(admin, world.key("audit"))) == everything,
                   timeout=60, what="the messages held by the breaker", details=world.all_logs)

        # and sagas complete or compensate, operated from the CLI,
        checkout = twin(producer, saga_name, saga_streams)
        assert checkout.start_sync(CheckoutOrder(n=1), saga_id="s-ok")
        assert checkout.start_sync(CheckoutOrder(n=2, abort_at="reserve"), saga_id="s-abort")
        wait_until(lambda: admin.llen(world.key("outcomes")) == 2, timeout=60,
                   what="both sagas to finish", details=world.all_logs)
        outcomes = {o.decode() for o in admin.lrange(world.key("outcomes"), 0, -1)}
        assert outcomes == {"s-ok completed", "s-abort compensated"}
        shown = ok(cli(world, url, "saga", "show", "s-abort"))
        assert "compensated" in shown
        assert "s-ok" in ok(cli(world, url, "saga", "list"))
        report: dict[str, Any] = json.loads(ok(cli(world, url, "status", "--json")))
    finally:
        producer.close()

    # Every message was handled exactly once, and nothing is left anywhere;
    assert hash_counts(admin, world.key("work")) == dict.fromkeys(everything, 1)
    assert hash_counts(admin, world.key("audit")) == dict.fromkeys(everything, 1)
    for key in (keys.stream, keys.retry):
        assert admin.xpending(key, work)["pending"] == 0
    assert admin.zcard(keys.delayed) == 0
    assert admin.xlen(keys.dlq) == 0
    [row] = [h for h in report["handlers"] if h["name"] == work]
    assert row["dead_letters"] == 0 and row["pending"] == 0
    # the start warned that it could not check Redis's configuration (CONFIG GET is not
    # granted), and Redis refused nothing else the whole time.
    run.signal(signal.SIGTERM)
    assert run.wait(60) == 0, run.logs()
    logs = run.log_path.read_text()
    assert "could not check Redis's maxmemory-policy and persistence" in logs
    assert denials(admin) == {("command", "config|get")}, denials(admin)
    assert PASSWORD not in logs
    saga_keys = SagaKeys(saga_name)
    assert admin.exists(saga_keys.ledger("s-abort"))


def test_commands_and_keys_outside_the_list_are_refused(world: E2E, server: OwnRedis) -> None:
    admin = world.client
    stream = world.stream("orders")
    mine = f"mine.{world.uid}"
    app = App(world.app_name)

    @app.handler(stream, name=mine)
    async def handle(payload: dict[str, int]) -> None: ...

    other = App(f"other{world.uid}")

    @other.handler(stream, name=f"theirs.{world.uid}")
    async def theirs(payload: dict[str, int]) -> None: ...

    # Given the user of an app with one handler on a stream another app's handler also reads,
    rules = acl_rules(key_patterns(app), password=PASSWORD)
    admin.execute_command("ACL", "SETUSER", USER, *rules)
    client = redis.Redis.from_url(server.url_for(USER, PASSWORD))
    mine_keys = HandlerKeys(stream, mine)
    theirs_keys = HandlerKeys(stream, f"theirs.{world.uid}")
    assert client.xadd(stream, {"payload": "{}"})  # what it needs, it may do
    assert client.hset(mine_keys.breaker, "state", "closed") == 1
    admin.set("outside:secret", "x")
    try:
        refused: list[tuple[Any, ...]] = [
            ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"),
            ("CONFIG", "GET", "requirepass"), ("KEYS", "*"), ("SCAN", "0"),
            ("GET", "outside:secret"), ("SET", "outside:key", "1"), ("DEL", "outside:secret"),
            ("XADD", f"another-stream-{world.uid}", "*", "payload", "{}"),
            ("XRANGE", theirs_keys.dlq, "-", "+"), ("HSET", theirs_keys.breaker, "state", "open"),
            ("EVAL", "return redis.call('SET', KEYS[1], 1)", "1", "outside:key"),
            ("EVAL", "return redis.call('FLUSHALL')", "0"),
            ("ACL", "SETUSER", USER, "+@all", "~*"), ("CLIENT", "LIST"),
            ("SCRIPT", "FLUSH"), ("CLIENT", "KILL", "ID", "1"), ("SHUTDOWN", "NOSAVE"),
            ("INFO",), ("SUBSCRIBE", "news"), ("PUBLISH", "news", "x"),
            ("SLAVEOF", "127.0.0.1", "1"), ("SAVE",), ("MIGRATE", "127.0.0.1", "1", "k", "0", "1"),
        ]
        for command in refused:
            with pytest.raises(redis.ResponseError) as refusal:
                client.execute_command(*command)
            # NOPERM, or, for a command a script calls, the script's error saying so
            assert (isinstance(refusal.value, redis.exceptions.NoPermissionError)
                    or "user executing the script can't" in str(refusal.value)), refusal.value
        # (nothing changed: the server is up, the outside keys are as they were)
        assert admin.get("outside:secret") == b"x"
        assert admin.get("outside:key") is None
        assert admin.hget(theirs_keys.breaker, "state") is None
        assert _text(*admin.config_get("maxmemory-policy").values()) == "noeviction"
    finally:
        client.close()
