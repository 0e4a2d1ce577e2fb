"""No password is ever printed, logged or put on a command line.

A redis-server of the test's own requires a password. The test runs ``seawall run`` (and
reads its pool processes' command lines in /proc), ``/metrics``, ``status --json``, ``dlq
list``, ``--help`` of every command (with the URL in ``SEAWALL_REDIS_URL``), and the error
messages of a wrong password, an unreachable host and a malformed URL, and looks for the
password in everything they wrote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from e2e.own_redis import OwnRedis, own_redis
from e2e.support import E2E, wait_until
from queues.connection import ENV_VAR
from queues.keys import HandlerKeys
from workers.app import App
from workers.cli.main import cli
from workers.cli.private_redis import free_port

pytestmark = pytest.mark.slow

PASSWORD = "S3cret-test-pw-8e41"

SOURCE = """
from workers import NonRetryable

STREAM, HANDLER = {names!r}


@app.handler(STREAM, name=HANDLER)
async def handle(msg: Msg) -> None:
    if msg.n % 4 == 0:
        raise NonRetryable(f"refused message {{msg.n}}")
    await aredis().hincrby(PREFIX + "done", str(msg.n), 1)
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OwnRedis]:
    with own_redis(tmp_path, password=PASSWORD) as found:
        yield found


def seawall(world: E2E, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    return subprocess.run([sys.executable, "-m", "workers", *args], cwd=world.tmp,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, env={**base, **(env or {})})


def every_command(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every command and group under ``group`` (itself first)."""
    yield path
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))
        else:
            yield (*path, name)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_the_password_never_shows(tmp_path: Path, uid: str, server: OwnRedis) -> None:
    url = server.url
    assert PASSWORD in url
    world = E2E(uid, tmp_path, url, server.client())
    said: dict[str, str] = {}
    try:
        stream, handler = world.stream("orders"), world.handler("handle")
        app_path = world.write_app(SOURCE.format(names=(stream, handler)))

        # seawall run: its pool processes' command lines, its logs (text and JSON), /metrics
        # (given as an operator should: in the environment, not on the command line)
        port = free_port()
        run = world._start([sys.executable, "-m", "workers", "run", app_path, "--metrics-port",
                            str(port), "--log-format", "json", "--log-level", "DEBUG"], "run",
                           {ENV_VAR: url})
        world.wait_pool_ready("default", timeout=60)
        pools = run.wait_children(1, timeout=60)
        for pid in [run.pid, *pools]:
            said[f"cmdline {pid}"] = cmdline(pid)
        producer = App(f"{world.app_name}p", redis_url=url)
        try:
            producer.publish_many(stream, ({"n": n} for n in range(20)))
        finally:
            producer.close()
        dlq = HandlerKeys(stream, handler).dlq
        wait_until(lambda: world.client.hlen(world.key("done")) == 15
                   and world.client.xlen(dlq) == 5, timeout=60,
                   what="the messages", details=world.all_logs)
        said["/metrics"] = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

        # the operating commands (in this process: the same code, without a start-up each)
        runner = CliRunner()
        for args in (["status", "--json"], ["status"], ["dlq", "list"],
                     ["dlq", "list", "--handler", handler], ["breaker", "list"],
                     ["saga", "list"]):
            result = runner.invoke(cli, [*args, "--redis-url", url])
            assert result.exit_code == 0, result.output
            said[" ".join(args)] = result.output
        assert handler in said["status --json"] and "NonRetryable" in said["dlq list"]

        # --help of every command, the URL (with its password) in the environment
        for path in every_command(cli):
            result = runner.invoke(cli, [*path, "--help"], env={ENV_VAR: url})
            assert result.exit_code == 0, (path, result.output)
            said[f"{' '.join(path)} --help"] = result.output

        # error messages: a wrong password, an unreachable host, a malformed URL
        wrong = server.url_for(None, PASSWORD + "-but-wrong")
        gone = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
        malformed = f"redis://:{PASSWORD}@127.0.0.1:notaport/0"
        for name, bad in (("wrong password", wrong), ("unreachable", gone),
                          ("malformed", malformed)):
            for args in (["status"], ["dlq", "list"], ["breaker", "list"],
                         ["saga", "show", "s1"], ["publish", stream, "{}"]):
                result = runner.invoke(cli, [*args, "--redis-url", bad])
                assert result.exit_code == 1, (name, args, result.output)
                # (a ClickException: a message, no traceback)
                assert isinstance(result.exception, SystemExit), (name, args, result.exception)
                said[f"{name}: {' '.join(args)}"] = result.output
        assert "authentication failed" in said["wrong password: status"]
        failed_run = seawall(world, "run", app_path, env={ENV_VAR: wrong})
        assert failed_run.returncode == 1
        said["wrong password: run"] = failed_run.stdout + failed_run.stderr
        assert "authentication failed" in said["wrong password: run"]

        run.signal(signal.SIGTERM)
        assert run.wait(60) == 0, run.logs()

        # a supervisor whose Redis cannot be reached: its pools log their reconnect waits
        lost = world._start([sys.executable, "-m", "workers", "run", app_path,
                             "--log-level", "DEBUG"], "run-lost", {ENV_VAR: gone})
        kids = lost.wait_children(1, timeout=60)
        time.sleep(3)
        for pid in kids:
            said[f"cmdline {pid} (unreachable)"] = cmdline(pid)
        lost.signal(signal.SIGTERM)
        lost.wait(60)
        for proc in world.procs:
            said[f"log {proc.log_path.name}"] = proc.log_path.read_text(errors="replace")
    finally:
        world.kill_all()
        world.client.close()

    leaks = [where for where, text in said.items() if PASSWORD in text]
    assert leaks == [], f"the password shows in: {leaks}"
    assert ":***@" in said[f"log {run.log_path.name}"]  # the URL is named, redacted
    assert len(said) > 40
