"""Sagas: a three-step saga against the same three handlers chained by plain follow-ups.

Both drain N checkouts (charge -> reserve -> ship; small pydantic payloads, async handlers
that only publish the next event) in their own pool process (``python -m
workers.runtime.process bench.saga_app:app bench 0``), with the same step bodies
(``bench/saga_app.py``):

- ``saga``: ``Saga(app, ...)`` with three steps, each with a compensation (never called:
  nothing fails) and a 10-minute deadline. The N sagas are started (``saga.start_sync``, one
  script each) before the pool process starts. Each step's ack, its saga's ledger and the
  next step's event change in one script; the last step finishes the saga.
- ``plain``: three ``@app.handler``s on three streams, step k publishing to stream k + 1
  with ``ctx.publish`` (committed with the ack, relayed through the outbox). The N orders
  are published before the pool process starts.

Both are timed the same way from outside: from the first entry read (the first step's
group's ``entries-read`` moves) until every checkout went through: for the saga,
``queues.saga_store.counts_sync`` says N completed; for the plain chain, the last stream's
group has read N with no lag and nothing pending. Process start-up is left out of both.

    python bench/sagas.py [--n 5000] [--rounds 3]

Each variant runs ``--rounds`` times, interleaved (each round starting with the next
variant), and the table shows each variant's median round, with the consumer process's
CPU time per checkout. It ends with ``ratio: <saga sagas/s / plain chains/s>``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from queues.keys import REGISTRY

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run as a script, bench/ is sys.path[0] and the root is not

from bench.throughput import (  # noqa: E402
    Result,
    _cpu_seconds,
    _descendants,
    _group,
    _peak_rss_mb,
    median_round,
)
from queues import saga_store  # noqa: E402
from queues.keys import HandlerKeys  # noqa: E402

APP = "bench.saga_app:app"


def _spawn(url: str, mode: str, prefix: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BENCH_SAGA_MODE=mode, BENCH_SAGA_PREFIX=prefix,
               SEAWALL_REDIS_URL=url,
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.Popen(
        [sys.executable, "-m", "workers.runtime.process", APP, "bench", "0",
         "--log-level", "WARNING"], env=env, cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _time(proc: subprocess.Popen[bytes], started: Callable[[], bool],
          done: Callable[[], bool], timeout: float = 600.0
          ) -> tuple[float, float | None, float]:
    """Seconds from ``started()`` until ``done()``; peak RSS (MB) and CPU seconds of the
    consumer over that span."""
    t0: float | None = None
    cpu0 = 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        if t0 is None and started():
            t0 = now
            cpu0 = _cpu_seconds(proc.pid)
        if t0 is not None and done():
            cpu = _cpu_seconds(proc.pid) - cpu0
            rss = max((_peak_rss_mb(p) or 0.0) for p in [proc.pid, *_descendants(proc.pid)])
            return now - t0, rss or None, cpu
        if proc.poll() is not None:
            raise RuntimeError(f"consumer exited early with code {proc.returncode}")
        time.sleep(0.005)
    raise TimeoutError("the checkouts did not all go through in time")


def _read_some(client: redis.Redis, stream: str, group: str) -> Callable[[], bool]:
    def started() -> bool:
        info = _group(client, stream, group)
        return info is not None and info["read"] > 0

    return started


def _forget_handlers(client: redis.Redis, app: Any) -> None:
    """Take the run's handlers out of the registry (``seawall status`` would list them)."""
    if app.handlers:
        client.hdel(REGISTRY, *app.handlers)


def _delete_matching(client: redis.Redis, pattern: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


def run_saga(client: redis.Redis, url: str, n: int) -> Result:
    from bench.saga_app import STREAMS, Order, build

    prefix = f"bsaga{uuid.uuid4().hex[:8]}"
    app, saga = build("saga", prefix)
    assert saga is not None
    try:
        for i in range(n):
            saga.start_sync(Order(n=i, order_id=f"o-{i}", amount_cents=500 + i),
                            saga_id=f"o-{i}")
        proc = _spawn(url, "saga", prefix)
        try:
            first = HandlerKeys(saga.keys.on(STREAMS[0]), f"{prefix}.charge")
            seconds, rss, cpu = _time(
                proc, _read_some(client, first.stream, first.group),
                lambda: saga_store.counts_sync(client, saga.keys)["completed"] >= n)
        finally:
            _stop(proc)
        counts = saga_store.counts_sync(client, saga.keys)
        if counts["completed"] != n or sum(counts.values()) != n:
            raise RuntimeError(f"saga run ended with {counts}, expected {n} completed")
    finally:
        app.close()
        _delete_matching(client, f"seawall:{{{saga.keys.tag}}}:*")
        _forget_handlers(client, app)
    return Result("saga (3 steps)", n, seconds, rss, cpu)


def run_plain(client: redis.Redis, url: str, n: int) -> Result:
    from bench.saga_app import STREAMS, Order, build, plain_stream

    prefix = f"bchain{uuid.uuid4().hex[:8]}"
    app, _ = build("plain", prefix)
    streams = [plain_stream(prefix, s) for s in STREAMS]
    try:
        for start in range(0, n, 1000):
            app.publish_many(streams[0], [Order(n=i, order_id=f"o-{i}", amount_cents=500 + i)
                                          for i in range(start, min(n, start + 1000))])
        proc = _spawn(url, "plain", prefix)

        def done() -> bool:
            info = _group(client, streams[-1], "chain.ship")
            return (info is not None and info["read"] >= n and info["lag"] == 0
                    and info["pending"] == 0)

        try:
            seconds, rss, cpu = _time(proc, _read_some(client, streams[0], "chain.charge"),
                                      done)
        finally:
            _stop(proc)
    finally:
        app.close()
        _forget_handlers(client, app)
        client.delete(*streams)
        for stream in streams:
            _delete_matching(client, f"seawall:{{{stream}}}:*")
    return Result("plain chain (3 handlers)", n, seconds, rss, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5_000, help="checkouts per run")
    parser.add_argument("--redis-url", default=os.environ.get("SEAWALL_REDIS_URL",
                                                               "redis://127.0.0.1:6379/0"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["SEAWALL_REDIS_URL"] = args.redis_url  # the apps built here read it
    client = redis.Redis.from_url(args.redis_url)
    url, n = args.redis_url, args.n
    variants: list[Callable[[], Result]] = [
        lambda: run_plain(client, url, n),
        lambda: run_saga(client, url, n),
    ]
    rounds: list[list[Result]] = [[] for _ in variants]
    for round_no in range(max(1, args.rounds)):
        for k in range(len(variants)):
            i = (round_no + k) % len(variants)
            rounds[i].append(variants[i]())
    plain, saga = (median_round(r) for r in rounds)
    print(f"\nmedian of {max(1, args.rounds)} rounds, {n} checkouts each (3 steps)")
    print(f"{'run':<26} {'checkouts':>9} {'seconds':>8} {'checkouts/s':>12} "
          f"{'steps/s':>9} {'CPU us/checkout':>16} {'peak RSS MB':>12}")
    for r in (plain, saga):
        rss = f"{r.peak_rss_mb:.1f}" if r.peak_rss_mb else "-"
        cpu = f"{r.cpu_us_per_message:.1f}" if r.cpu_us_per_message is not None else "-"
        print(f"{r.name:<26} {r.messages:>9} {r.seconds:>8.3f} {r.rate:>12.0f} "
              f"{r.rate * 3:>9.0f} {cpu:>16} {rss:>12}")
    print(f"ratio: {saga.rate / plain.rate:.2f}")


if __name__ == "__main__":
    main()
