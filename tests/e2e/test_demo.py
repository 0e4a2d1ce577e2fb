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

from workers.cli.private_redis import PrivateRedis, free_port, redis_server_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(redis_server_path() is None, reason="needs redis-server on PATH"),
]


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


def run_demo(*args: str, timeout: float = 60.0,
             **shop_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SEAWALL_REDIS_URL"}
    env.update(shop_env)
    return subprocess.run([sys.executable, "-m", "workers", "demo", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


SUMMARY = ["HANDLER", "POOL", "HANDLED", "RETRIES", "FALLBACKS", "PARKED", "DEAD", "LETTERS",
           "PENDING", "DELAYED"]
"""The summary table's header, split at spaces ("DEAD LETTERS" is one column)."""


def summary_rows(stdout: str) -> dict[str, dict[str, int]]:
    """The summary table printed after ``published N orders``: handler -> column -> count."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("published "))
    assert lines[start + 1].split() == SUMMARY, stdout
    columns = ["pool", "handled", "retries", "fallbacks", "parked", "dead letters", "pending",
               "delayed"]
    rows = {}
    for line in lines[start + 2:]:
        cells = line.split()
        if len(cells) != len(columns) + 1:
            break
        rows[cells[0]] = {c: int(v) for c, v in zip(columns[1:], cells[2:], strict=True)}
    return rows


def breaker_rows(stdout: str) -> list[tuple[int, str]]:
    """billing.charge's (lag, breaker state) in every live frame, oldest first (the state
    cell may go on with the time until half-open: ``open (9s)``)."""
    rows = []
    for line in stdout.splitlines():
        cells = line.split()
        if len(cells) >= 10 and cells[0] == "billing.charge" and cells[3].isdigit():
            rows.append((int(cells[3]), cells[9]))
    return rows


def test_the_demo_rides_out_a_payment_outage_and_accounts_for_every_order(
        private_redis: PrivateRedis) -> None:
    # Given a Redis of our own and a payment provider that fails only in its outage (not
    # also at random, which could fail the one half-open probe and reopen the breaker),
    # when the demo runs for 13 seconds at 20 orders a second with the provider down from
    # 1 s to 3 s (the shop's breaker stays open 10 s),
    result = run_demo("--duration", "13", "--rate", "20", "--outage-at", "1",
                      "--outage-for", "2", "--drain", "10", "--redis-url", private_redis.url,
                      timeout=90, SHOP_PAYMENT_FAILURE_RATE="0")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr

    # then billing.charge's breaker opened during the outage and closed after it,
    transitions = [line.split(None, 1) for line in out.splitlines()
                   if line.startswith("  ") and "billing.charge: " in line]
    changes = [text.split(" (")[0] for _, text in transitions]
    assert changes == ["billing.charge: closed -> open", "billing.charge: open -> half_open",
                       "billing.charge: half_open -> closed"], out
    opened_at, half_open_at = float(transitions[0][0][:-1]), float(transitions[1][0][:-1])
    assert 1.0 <= opened_at < 3.0, out
    assert half_open_at - opened_at >= 9.5, out  # open_for=10 in examples/shop/app.py
    # while it was open the orders waited in the stream (the live table shows the lag),
    frames = breaker_rows(out)
    assert any(state == "open" and lag > 20 for lag, state in frames), frames
    # and every order was charged or, for a declined card only, dead-lettered: the outage
    # itself dead-lettered nothing, and nothing is left pending or delayed.
    rows = summary_rows(out)
    assert set(rows) == {"billing.charge", "inventory.reserve", "shipping.ship",
                         "email.confirm"}
    published = int(out.split("published ")[-1].split()[0])
    billing = rows["billing.charge"]
    charged, dead = billing["handled"], billing["dead letters"]
    assert charged + dead == published, out
    assert billing["fallbacks"] == 0, out  # billing.charge has no fallback
    assert rows["email.confirm"]["handled"] == published, out
    for name, cells in rows.items():
        assert (cells["pending"], cells["delayed"]) == (0, 0), (
            f"{name} left messages behind:\n{out}")
    dead_line = [line for line in out.splitlines() if line.startswith("dead letters by error")]
    if dead:
        assert dead_line == [f"dead letters by error: billing.charge CardDeclined x{dead}"], out
    # and the orders went all the way through: Redis holds the last step's events.
    client = redis.Redis.from_url(private_redis.url)
    try:
        assert client.xlen("orders") == published
        assert client.xlen("shipments") == charged
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
