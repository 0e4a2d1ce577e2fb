"""Throughput on a Redis Cluster: seawall against the raw redis-py loop, both spread over
every master.

N messages are spread over one stream per master (each stream's name chosen so that its
slot is served by that master), and drained by one consumer process per master: for
seawall, one pool process per master (``bench/cluster_app.py``: pool ``m<i>`` reads stream
i); for the yardstick, bench/raw_consumer.py's loop on redis-py's ``RedisCluster``
(bench/raw_cluster_consumer.py), one process per stream. Both are timed the same way from
outside: from the first entry read on any stream until every group has no lag and nothing
pending. The CPU column is the consumer processes' CPU time per message, all of them added.

    python bench/throughput.py --cluster [--n 30000] [--rounds 3] [--redis-url URL]

Without ``--redis-url`` (a ``redis+cluster://`` URL) it starts a local cluster of its own
(3 masters, 3 replicas; tests/cluster/local_cluster.py) and stops it afterwards. Ends with
``cluster ratio: <seawall msgs/s / raw msgs/s>``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from throughput import Result, _cpu_seconds, _group, _publish, median_round  # noqa: E402

from queues.connection import connect_sync  # noqa: E402


def _streams(client: Any, tag: str) -> list[str]:
    """One stream name per master, each in a slot that master serves."""
    masters = sorted(client.get_primaries(), key=lambda node: node.name)
    out = []
    for i, master in enumerate(masters):
        k = 0
        while client.get_node_from_key(name := f"bench-{tag}-{i}-{k}").name != master.name:
            k += 1
        out.append(name)
    return out


def _drain(client: Any, procs: list[subprocess.Popen[bytes]], groups: list[tuple[str, str]],
           per_stream: int, timeout: float = 600.0) -> tuple[float, float]:
    """Seconds from the first read on any stream until every group is done, and the CPU
    seconds every consumer process spent meanwhile. As in bench/throughput.py's
    ``_time_drain``, the first read is placed halfway between the last look that saw
    nothing read and the first that saw a read (a tiny input may be drained between two
    looks)."""
    t0: float | None = None
    cpu0 = 0.0
    deadline = time.monotonic() + timeout
    before = time.monotonic()
    while time.monotonic() < deadline:
        infos = [_group(client, stream, group) for stream, group in groups]
        now = time.monotonic()
        if t0 is None and any(i and i["read"] > 0 for i in infos):
            t0 = (before + now) / 2
            cpu0 = sum(_cpu_seconds(p.pid) for p in procs)
        elif t0 is None:
            before = now
        if t0 is not None and all(i and i["read"] >= per_stream and i["lag"] == 0
                                  and i["pending"] == 0 for i in infos):
            return now - t0, sum(_cpu_seconds(p.pid) for p in procs) - cpu0
        for proc in procs:
            # A raw consumer exits 0 once it has read its share: only a failure is early.
            if proc.poll() not in (None, 0):
                raise RuntimeError(f"a consumer exited early with code {proc.returncode}")
        time.sleep(0.005)
    raise TimeoutError("drain did not finish")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _env(url: str, streams: list[str]) -> dict[str, str]:
    return dict(os.environ, BENCH_STREAMS=",".join(streams), SEAWALL_REDIS_URL=url,
                PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def run_raw(client: Any, url: str, seeds: str, n: int) -> Result:
    streams = _streams(client, f"raw{uuid.uuid4().hex[:6]}")
    per_stream = n // len(streams)
    for stream in streams:
        _publish(client, stream, per_stream)
    procs = [subprocess.Popen([sys.executable, str(HERE / "raw_cluster_consumer.py"), seeds,
                               stream, "raw", str(per_stream)]) for stream in streams]
    try:
        seconds, cpu = _drain(client, procs, [(s, "raw") for s in streams], per_stream)
    finally:
        _stop(procs)
        for stream in streams:
            client.delete(stream)
    return Result(f"raw loop, {len(streams)} processes", per_stream * len(streams), seconds,
                  None, cpu)


def run_seawall(client: Any, url: str, n: int) -> Result:
    from queues.keys import HandlerKeys

    streams = _streams(client, f"sw{uuid.uuid4().hex[:6]}")
    per_stream = n // len(streams)
    for stream in streams:
        _publish(client, stream, per_stream)
    env = _env(url, streams)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "workers.runtime.process", "bench.cluster_app:app", f"m{i}",
         "0", "--log-level", "WARNING", "--log-format", "json"], env=env, cwd=ROOT)
        for i in range(len(streams))]
    groups = [(s, f"bench.noop{i}") for i, s in enumerate(streams)]
    try:
        seconds, cpu = _drain(client, procs, groups, per_stream)
    finally:
        _stop(procs)
        for i, stream in enumerate(streams):
            keys = HandlerKeys(stream, f"bench.noop{i}")
            client.delete(stream)
            for key in (keys.retry, keys.delayed, keys.dlq, keys.breaker, keys.breaker_log):
                client.delete(key)
    return Result(f"seawall, {len(streams)} pool processes", per_stream * len(streams),
                  seconds, None, cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", default=None,
                        help="a redis+cluster:// URL (default: a local cluster of its own)")
    args = parser.parse_args(argv)
    local = None
    url = args.redis_url
    if url is None or not url.startswith("redis+cluster://"):
        from cluster.local_cluster import LocalCluster

        local = LocalCluster()
        url = local.url
    try:
        client: Any = connect_sync(url)
        seeds = url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
        masters = len(client.get_primaries())
        variants = [lambda: run_raw(client, url, seeds, args.n),
                    lambda: run_seawall(client, url, args.n)]
        rounds: list[list[Result]] = [[] for _ in variants]
        for r in range(max(1, args.rounds)):
            for k in range(len(variants)):
                i = (r + k) % len(variants)
                rounds[i].append(variants[i]())
        results = [median_round(r) for r in rounds]
        print(f"\nRedis Cluster, {masters} masters: median of {max(1, args.rounds)} rounds, "
              f"{results[0].messages} messages each, one stream and one consumer process "
              "per master")
        print(f"{'run':<30} {'messages':>9} {'seconds':>8} {'msgs/s':>10} {'CPU us/msg':>11}")
        for res in results:
            cpu = res.cpu_us_per_message
            print(f"{res.name:<30} {res.messages:>9} {res.seconds:>8.2f} {res.rate:>10.0f} "
                  f"{'-' if cpu is None else f'{cpu:.1f}':>11}")
        print(f"cluster ratio: {results[1].rate / results[0].rate:.2f}")
        client.close()
    finally:
        if local is not None:
            local.stop()


if __name__ == "__main__":
    main()
