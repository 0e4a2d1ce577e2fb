"""``seawall demo`` end to end: the real CLI, the real supervisor and pool processes, and a
redis-server of the test's own on a free port (the shop uses fixed stream names, so it must
not share a Redis with other tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from workers.demo_redis import PrivateRedis, free_port, redis_server_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(redis_server_path() is None, reason="needs redis-server on PATH"),
]


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


def run_demo(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SEAWALL_REDIS_URL"}
    return subprocess.run([sys.executable, "-m", "workers", "demo", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table printed after ``published N orders``: handler -> its cells."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("published "))
    header = lines[start + 1].split()
    assert header[:3] == ["HANDLER", "POOL", "HANDLED"], stdout
    rows = {}
    for line in lines[start + 2:]:
        cells = line.split()
        if len(cells) != 7:  # "DEAD LETTERS" is one column of two words in the header
            break
        rows[cells[0]] = cells
    return rows


def test_demo_runs_the_shop_and_stops_cleanly(private_redis: PrivateRedis) -> None:
    # Given a Redis of our own
    # When the demo runs for 5 seconds against it
    result = run_demo("--duration", "5", "--rate", "20", "--redis-url", private_redis.url)

    # Then it exits 0 after drawing the live status table
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HANDLER" in result.stdout and "BREAKER" in result.stdout
    assert "billing.charge     orders" in result.stdout
    # and every handler of the chain handled messages
    rows = summary_rows(result.stdout)
    assert set(rows) == {"billing.charge", "inventory.reserve", "shipping.ship",
                         "email.confirm"}
    for name, cells in rows.items():
        assert int(cells[2]) > 0, f"{name} handled nothing:\n{result.stdout}"
    # and the orders went all the way through: Redis holds the last step's events
    client = redis.Redis.from_url(private_redis.url)
    try:
        assert client.xlen("orders") >= 80
        assert client.xlen("shipments") > 0
        assert client.hget("seawall:registry", "billing.charge") is not None
        assert not client.hkeys("seawall:processes"), "pool processes left their heartbeats"
    finally:
        client.close()


def test_demo_starts_its_own_redis_when_none_answers() -> None:
    # Given a URL where nothing listens
    url = f"redis://127.0.0.1:{free_port()}/0"

    # When the demo runs briefly
    result = run_demo("--duration", "1", "--drain", "1", "--redis-url", url)

    # Then it ran a private redis-server, said so, and stopped it
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started a private redis-server" in result.stdout
    assert "stopped the private redis-server" in result.stdout
    assert "published " in result.stdout
