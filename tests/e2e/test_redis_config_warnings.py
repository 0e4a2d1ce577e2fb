"""``seawall run`` warns at start about a Redis that can lose seawall's data silently (an
eviction policy, no persistence), against redis-servers of the test's own configured each
way; a user refused CONFIG GET, or a Redis that does not answer, gets a warning that the
check could not be made, never a crash. Which settings warn, as a pure function:
tests/queues/test_server_config.py."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from e2e.own_redis import own_redis
from e2e.support import E2E
from queues import server_config
from workers.cli.private_redis import free_port

EVICTS = "maxmemory-policy is allkeys-lru"
NOT_KEPT = "persistence is off"
UNCHECKED = "could not check Redis's maxmemory-policy and persistence"


@pytest.mark.parametrize(("args", "expected"), [
    (("--maxmemory-policy", "allkeys-lru", "--appendonly", "yes"), [EVICTS]),
    ((), [NOT_KEPT]),  # own_redis's default: no save points, no append-only file
    (("--appendonly", "yes"), []),
    (("--save", "900 1"), []),
])
def test_servers_configured_each_way(tmp_path: Path, args: tuple[str, ...],
                                     expected: list[str]) -> None:
    with own_redis(tmp_path, *args) as server:
        found = server_config.check(server.url)
    assert len(found) == len(expected), found
    for warning, words in zip(found, expected, strict=True):
        assert words in warning


def test_a_user_refused_config_get_is_told_the_check_was_not_made(tmp_path: Path) -> None:
    with own_redis(tmp_path) as server:
        server.client().execute_command("ACL", "SETUSER", "limited", "on", ">pw-limited",
                                        "-@all", "+ping", "~*")
        found = server_config.check(server.url_for("limited", "pw-limited"))
    assert len(found) == 1 and UNCHECKED in found[0] and "CONFIG GET" in found[0]


def test_a_redis_that_does_not_answer_is_not_an_error() -> None:
    found = server_config.check(f"redis://127.0.0.1:{free_port()}/0", timeout=1)
    assert len(found) == 1 and UNCHECKED in found[0]


@pytest.mark.slow
def test_seawall_run_warns_and_starts(tmp_path: Path, uid: str) -> None:
    with own_redis(tmp_path, "--maxmemory-policy", "allkeys-lru") as server:
        world = E2E(uid, tmp_path, server.url, server.client())
        try:
            app_path = world.write_app(
                f"@app.handler('orders-{uid}')\nasync def handle(msg: Msg) -> None: ...\n")
            run = world.run(app_path, "--log-format", "text")
            world.wait_pool_ready("default", timeout=60)
            run.signal(signal.SIGTERM)
            assert run.wait(60) == 0, run.logs()
        finally:
            world.kill_all()
            world.client.close()
    logs = run.log_path.read_text()
    assert EVICTS in logs and NOT_KEPT in logs, logs
    assert "Traceback" not in logs
