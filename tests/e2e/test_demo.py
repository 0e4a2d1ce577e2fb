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


SAGA_STATES = ["running", "completed", "compensating", "timed_out", "compensated", "failed"]
HANDLERS = ["HANDLER", "POOL", "HANDLED", "RETRIES", "FALLBACKS", "PARKED", "GAVE", "UP",
            "PENDING", "DELAYED"]
"""The handler table's header, split at spaces ("GAVE UP" is one column)."""


def _summary_start(lines: list[str]) -> int:
    return max(i for i, line in enumerate(lines)
               if line.startswith("started ") and " checkouts in " in line)


def saga_row(stdout: str) -> dict[str, int]:
    """The summary's saga table: started, and the checkouts in each state."""
    lines = stdout.splitlines()
    start = _summary_start(lines)
    assert lines[start + 1].split() == ["SAGA", "STARTED", *(s.upper() for s in SAGA_STATES)]
    cells = lines[start + 2].split()
    assert cells[0] == "checkout", stdout
    return dict(zip(["started", *SAGA_STATES], map(int, cells[1:]), strict=True))


def summary_rows(stdout: str) -> dict[str, dict[str, int]]:
    """The summary's handler table: handler -> column -> count."""
    lines = stdout.splitlines()
    start = next(i for i in range(_summary_start(lines), len(lines))
                 if lines[i].startswith("HANDLER "))
    assert lines[start].split() == HANDLERS, stdout
    columns = ["pool", "handled", "retries", "fallbacks", "parked", "gave up", "pending",
               "delayed"]
    rows = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if len(cells) != len(columns) + 1:
            break
        rows[cells[0]] = {c: int(v) for c, v in zip(columns[1:], cells[2:], strict=True)}
    return rows


def breaker_rows(stdout: str) -> list[tuple[int, str]]:
    """checkout.charge's (lag, breaker state) in every live frame, oldest first (the state
    cell may go on with the time until half-open: ``open (9s)``)."""
    rows = []
    for line in stdout.splitlines():
        cells = line.split()
        if len(cells) >= 10 and cells[0] == "checkout.charge" and cells[3].isdigit():
            rows.append((int(cells[3]), cells[9]))
    return rows


def test_the_demo_rides_out_a_payment_outage_and_every_checkout_ends_final(
        private_redis: PrivateRedis) -> None:
    # Given a Redis of our own and a payment provider that fails only in its outage (not
    # also at random, which could fail the one half-open probe and reopen the breaker),
    # when the demo runs for 16 seconds at 20 checkouts a second with the provider down
    # from 3 s to 6 s (time for the pools to start on a busy machine; the shop's breaker
    # stays open 10 s), checkouts given 8 s, and up to 20 s to drain (the refunds' own
    # breaker may open on the outage's failures too; the drain ends once all is done),
    result = run_demo("--duration", "16", "--rate", "20", "--outage-at", "3",
                      "--outage-for", "3", "--deadline", "8", "--drain", "20",
                      "--redis-url", private_redis.url, timeout=90,
                      SHOP_PAYMENT_FAILURE_RATE="0")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr

    # then checkout.charge's breaker opened during the outage and closed after it,
    transitions = [line.split(None, 1) for line in out.splitlines()
                   if line.startswith("  ") and "checkout.charge: " in line]
    changes = [text.split(" (")[0] for _, text in transitions]
    assert changes == ["checkout.charge: closed -> open", "checkout.charge: open -> half_open",
                       "checkout.charge: half_open -> closed"], out
    opened_at, half_open_at = float(transitions[0][0][:-1]), float(transitions[1][0][:-1])
    assert 3.0 <= opened_at < 6.0, out
    assert half_open_at - opened_at >= 9.5, out  # open_for=10 in examples/shop/app.py
    # while it was open the checkouts waited in the stream (the live table shows the lag),
    frames = breaker_rows(out)
    assert any(state == "open" and lag > 20 for lag, state in frames), frames

    # and the counts add up: every checkout started is in exactly one state, and with the
    # backlog drained every one of them is final: completed, or compensated (none failed,
    # none left running or compensating);
    sagas = saga_row(out)
    started = int(out.split("started ")[-1].split()[0])
    assert sagas["started"] == started == sum(sagas[s] for s in SAGA_STATES), out
    assert sagas["completed"] + sagas["compensated"] == started, out
    assert sagas["completed"] > 0 and sagas["compensated"] > 0, out
    # the ones that waited out the breaker longer than their deadline were compensated,
    causes = next(line for line in out.splitlines()
                  if line.startswith("compensated or failed, by cause: "))
    assert "timed_out x" in causes, out

    # and each handler's counts agree with the sagas' ends:
    rows = summary_rows(out)
    assert set(rows) == {"checkout.charge", "checkout.charge.undo", "checkout.reserve",
                         "checkout.reserve.undo", "checkout.ship", "email.confirm",
                         "checkout.on_outcome"}
    charge, refund = rows["checkout.charge"], rows["checkout.charge.undo"]
    reserve, release = rows["checkout.reserve"], rows["checkout.reserve.undo"]
    completed = sagas["completed"]
    # every checkout was charged or its card declined (an abort, never a dead letter: the
    # outage itself gave up on nothing),
    assert charge["handled"] + charge["gave up"] == started, out
    assert charge["fallbacks"] == 0, out  # checkout.charge has no fallback
    assert "dead letters by error" not in out, out
    # every charge of a checkout that did not complete was refunded, once (also the ones
    # that went through after their checkout had timed out),
    assert refund["handled"] == charge["handled"] - completed, out
    # every reservation (and every one found short: undo_if_failed) of a checkout that did
    # not complete was released, once,
    assert release["handled"] == reserve["handled"] + reserve["gave up"] - completed, out
    # a confirmation went out per completed checkout, and an outcome per finished one,
    assert rows["email.confirm"]["handled"] == completed, out
    assert rows["checkout.on_outcome"]["handled"] == started, out
    for name, cells in rows.items():
        assert (cells["pending"], cells["delayed"]) == (0, 0), (
            f"{name} left messages behind:\n{out}")
    # and Redis holds the first and the last events: one per checkout started, and one
    # shipment per checkout completed.
    client = redis.Redis.from_url(private_redis.url)
    try:
        assert client.xlen("seawall:{saga:checkout}:on:orders") == started
        assert client.xlen("shipments") == completed
        assert client.hget("seawall:registry", "checkout.charge") is not None
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
    assert "started " in result.stdout
