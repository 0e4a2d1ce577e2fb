"""TLS: ``rediss://`` to a redis-server that serves only TLS, with a certificate signed by a
CA the test makes with openssl, the CA given in the URL (``?ssl_ca_certs=``); and a clear
error, with no traceback, when the certificate does not verify."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from e2e.own_redis import OwnRedis, make_ca, make_tls, own_redis
from e2e.support import E2E, wait_until
from workers.app import App
from workers.cli.main import cli

pytestmark = pytest.mark.slow

SOURCE = """
STREAM, HANDLER = {names!r}


@app.handler(STREAM, name=HANDLER)
async def handle(msg: Msg) -> None:
    await aredis().hincrby(PREFIX + "done", str(msg.n), 1)
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OwnRedis]:
    with own_redis(tmp_path, tls=make_tls(tmp_path / "tls")) as found:
        yield found


@pytest.fixture
def world(tmp_path: Path, uid: str, server: OwnRedis) -> Iterator[E2E]:
    found = E2E(uid, tmp_path, server.url, server.client())
    try:
        yield found
    finally:
        found.kill_all()
        if found._app is not None:
            found._app.close()
        found.client.close()


def seawall(world: E2E, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SEAWALL_REDIS_URL"}
    return subprocess.run([sys.executable, "-m", "workers", *args], cwd=world.tmp,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, env=env)


def test_a_pool_handles_messages_over_tls(world: E2E, server: OwnRedis) -> None:
    # Given a Redis that speaks only TLS (its plain port is closed), and its CA in the URL,
    assert server.url.startswith("rediss://") and "ssl_ca_certs=" in server.url
    stream, handler = world.stream("orders"), world.handler("handle")
    app_path = world.write_app(SOURCE.format(names=(stream, handler)))

    # when a pool runs and a producer publishes over TLS,
    run = world.run(app_path)
    world.wait_pool_ready("default", timeout=60)
    producer = App(f"{world.app_name}p", redis_url=server.url)
    try:
        producer.publish_many(stream, ({"n": n} for n in range(50)))
    finally:
        producer.close()

    # then every message is handled once, and the CLI reads the backlog over TLS too.
    def done() -> dict[int, int]:
        return {int(k): int(v) for k, v in world.client.hgetall(world.key("done")).items()}

    wait_until(lambda: len(done()) == 50, timeout=60, what="50 messages over TLS",
               details=world.all_logs)
    assert done() == dict.fromkeys(range(50), 1)
    status = seawall(world, "status", "--json", "--redis-url", server.url)
    assert status.returncode == 0, status.stderr
    [row] = [h for h in json.loads(status.stdout)["handlers"] if h["name"] == handler]
    assert row["pending"] == 0 and row["lag"] == 0
    run.signal(signal.SIGTERM)
    assert run.wait(60) == 0, run.logs()


def test_a_certificate_signed_by_another_ca_is_refused_clearly(world: E2E, server: OwnRedis,
                                                                tmp_path: Path) -> None:
    # Given a URL that names a CA which did not sign the server's certificate,
    wrong_ca, _ = make_ca(tmp_path / "wrong", "wrong")
    wrong = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={wrong_ca}"
    stream, handler = world.stream("orders"), world.handler("handle")
    app_path = world.write_app(SOURCE.format(names=(stream, handler)))

    # when seawall run connects, it stops before starting any pool, with exit code 1 and a
    # message that names certificate verification and the fix, and no traceback;
    done = seawall(world, "run", app_path, "--redis-url", wrong)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "TLS certificate verification failed" in done.stderr, done.stderr
    assert "ssl_ca_certs" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    # and so do the other commands (run in this process: the same code, without a start-up
    # each).
    runner = CliRunner()
    for args in (["status"], ["dlq", "list"], ["breaker", "list"], ["saga", "list"],
                 ["publish", stream, "{}"]):
        result = runner.invoke(cli, [*args, "--redis-url", wrong])
        assert result.exit_code == 1, (args, result.output)
        assert isinstance(result.exception, SystemExit), (args, result.exception)
        assert "TLS certificate verification failed" in result.output, result.output
        assert "ssl_ca_certs" in result.output

