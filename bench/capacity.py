"""Capacity figures: what one message costs Redis and a pool process, per path.

Each row drains N messages published before its pool process(es) start, timed from
outside as bench/scale.py does (from the first entry read until everything of the path is
settled), and reads over that span:

- **Redis commands per message**: ``INFO commandstats`` calls (commands run inside scripts
  included), less the timing loop's own (XINFO, XLEN, ZCARD, INFO), by command;
- **Redis CPU per message**: ``INFO cpu`` ``used_cpu_sys`` + ``used_cpu_user`` of the
  redis-server's main thread (the one that runs commands; the bottleneck of a shard); by
  command, the time spent inside each (commandstats ``usec``: a script's EVALSHA counts the
  commands it ran, which are also listed under their own names, so the times do not add
  up; the rest of the CPU is reading, parsing and writing the sockets);
- **pool CPU per message**: the pool process(es)' CPU time, from /proc (schedstat, in ns);
- **network bytes per message**: ``total_net_input_bytes`` + ``total_net_output_bytes``;
- **Redis core busy**: the main thread's CPU seconds over the wall seconds of the drain;
- **connections**: what the pool process(es) hold open at the end of the drain.

Rows (``--n`` messages each, one pool process unless said):

- ``publish``: the producer's side, ``--n`` messages XADDed in pipelines of 1000 (what
  every other row's messages cost before they are consumed);
- ``ok``: async no-op handler, ``breaker=None`` (bench/scale_app.py);
- ``ok, breaker``: the same with the default ``CircuitBreaker()`` (bench/bench_app.py);
- ``follow-up``, ``retry``, ``dead letter``, ``idempotent``: bench/scale_app.py's paths
  (each message publishes one follow-up to another slot; fails once and is retried at once;
  fails validation; ``idempotent=True``);
- ``saga step``: bench/saga_app.py's three-step saga, ``--n // 3`` sagas started before the
  pool starts (their start is not in the row), figures per step message;
- ``ok, 2 processes``: the ``ok`` path with two pool processes on the one stream (and one
  Redis), to see whether Redis's core or the pool processes run out first on this machine.

After the table it prints the capacity model: per path, messages/s per pool process (its
wall rate as measured, and what one core sustains at ``--headroom`` of 100 % from its CPU
per message) and per Redis shard (one core at ``--headroom``, from Redis CPU per message,
publish included), and the processes and shards 100,000 and 1,000,000 msgs/s need.

    python bench/capacity.py [--n 50000] [--rounds 1] [--headroom 0.7]
                             [--redis-url URL]

Without ``--redis-url`` it starts a throwaway redis-server of its own, so that the Redis
CPU and command counts are the run's alone; against a shared Redis they include everyone
else's traffic.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run as a script, bench/ is sys.path[0] and the root is not

from bench import sagas as bench_sagas  # noqa: E402
from bench.scale import POLLER_COMMANDS, _clean, _done, _env, _stop  # noqa: E402
from bench.throughput import _cpu_seconds, _group, _publish  # noqa: E402
from queues import saga_store  # noqa: E402
from queues.keys import REGISTRY, HandlerKeys  # noqa: E402

TARGETS = (100_000, 1_000_000)


@dataclass(frozen=True)
class Sample:
    """Counters read at one moment; two of them make a :class:`Usage`."""

    at: float
    pool_cpu: float
    redis_main: float
    redis_all: float
    net: int
    clients: int
    calls: dict[str, int]
    usec: dict[str, int]


def pool_cpu_seconds(pid: int) -> float:
    """CPU seconds of every thread of ``pid``, from ``/proc/<pid>/task/*/schedstat`` (in ns:
    a drain of a few thousand messages is a handful of the 10 ms ticks that
    ``/proc/<pid>/stat`` counts in); bench/throughput.py's tick count where schedstat is
    missing."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks) / 1e9
    except (OSError, ValueError, IndexError):
        return _cpu_seconds(pid)


def sample(client: redis.Redis, pids: list[int]) -> Sample:
    cpu = client.info("cpu")
    net = client.info("stats")
    clients = int(client.info("clients")["connected_clients"])
    calls: dict[str, int] = {}
    usec: dict[str, int] = {}
    for name, stats in client.info("commandstats").items():
        command = name.removeprefix("cmdstat_")
        if command not in POLLER_COMMANDS:
            calls[command] = int(stats["calls"])
            usec[command] = int(stats["usec"])
    return Sample(
        at=time.monotonic(), pool_cpu=sum(pool_cpu_seconds(p) for p in pids),
        redis_main=float(cpu["used_cpu_sys_main_thread"])
        + float(cpu["used_cpu_user_main_thread"]),
        redis_all=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        net=int(net["total_net_input_bytes"]) + int(net["total_net_output_bytes"]),
        clients=clients, calls=calls, usec=usec)


@dataclass
class Row:
    name: str
    processes: int
    messages: int
    seconds: float
    pool_cpu: float
    redis_main: float
    redis_all: float
    net: int
    clients: int
    """Connections open at the end of the drain, less the ones the run itself had before
    its pool processes started (what the pool processes hold)."""
    calls: dict[str, int] = field(default_factory=dict)
    usec: dict[str, int] = field(default_factory=dict)

    @classmethod
    def between(cls, name: str, processes: int, messages: int, a: Sample, b: Sample,
                own_clients: int = 0) -> Row:
        calls = {k: v - a.calls.get(k, 0) for k, v in b.calls.items() if v > a.calls.get(k, 0)}
        usec = {k: v - a.usec.get(k, 0) for k, v in b.usec.items() if k in calls}
        return cls(name, processes, messages, b.at - a.at, b.pool_cpu - a.pool_cpu,
                   b.redis_main - a.redis_main, b.redis_all - a.redis_all, b.net - a.net,
                   b.clients - own_clients, calls, usec)

    def per_message(self, value: float) -> float:
        return value / self.messages if self.messages else float("nan")

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("inf")

    @property
    def pool_us(self) -> float:
        return self.per_message(self.pool_cpu) * 1e6

    @property
    def redis_us(self) -> float:
        return self.per_message(self.redis_main) * 1e6

    @property
    def commands(self) -> float:
        return self.per_message(sum(self.calls.values()))

    @property
    def net_bytes(self) -> float:
        return self.per_message(self.net)

    @property
    def redis_busy(self) -> float:
        return self.redis_main / self.seconds if self.seconds > 0 else float("nan")


def _spawn(url: str, app: str, pool: str, slot: int, env: dict[str, str]
           ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers.runtime.process", app, pool, str(slot),
         "--log-level", "WARNING", "--log-format", "json"],
        env=env, cwd=ROOT, stderr=None if os.environ.get("CAPACITY_DEBUG") else subprocess.DEVNULL)


def measure(client: redis.Redis, name: str, messages: int,
            procs: list[subprocess.Popen[bytes]], started: Callable[[], bool],
            done: Callable[[], bool], own_clients: int, timeout: float = 1800.0) -> Row:
    """From ``started()`` (polled every 2 ms) until ``done()`` (every 10 ms)."""
    pids = [p.pid for p in procs]
    deadline = time.monotonic() + timeout
    while not started():
        _alive(procs, name, deadline)
        time.sleep(0.002)
    first = sample(client, pids)
    while not done():
        _alive(procs, name, deadline)
        time.sleep(0.01)
    return Row.between(name, len(procs), messages, first, sample(client, pids), own_clients)


def _clients(client: redis.Redis) -> int:
    return int(client.info("clients")["connected_clients"])


def _alive(procs: list[subprocess.Popen[bytes]], name: str, deadline: float) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"{name}: drain did not finish")
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"{name}: pool process exited with code {p.returncode}")


@contextmanager
def _running(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            _stop(p)


def _read_some(client: redis.Redis, stream: str, group: str) -> Callable[[], bool]:
    return lambda: (_group(client, stream, group) or {"read": 0})["read"] > 0


def run_publish(client: redis.Redis, n: int) -> Row:
    stream = f"cap{uuid.uuid4().hex[:8]}-pub"
    try:
        first = sample(client, [])
        _publish(client, stream, n)
        return Row.between("publish (XADD, pipelines of 1000)", 0, n, first, sample(client, []),
                           first.clients)
    finally:
        client.delete(stream)


def run_scale_path(client: redis.Redis, url: str, n: int, name: str, mode: str = "ok",
                   invalid: bool = False, processes: int = 1) -> Row:
    """One handler of bench/scale_app.py, ``processes`` pool processes on its stream."""
    prefix = f"cap{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}-0"
    keys = HandlerKeys(stream, "scale.h0")
    _publish(client, stream, n, invalid=invalid)
    env = _env(url, prefix, 1, mode)
    own = _clients(client)
    procs = [_spawn(url, "bench.scale_app:app", "scale", slot, env) for slot in range(processes)]
    try:
        with _running(procs):
            return measure(client, name, n, procs, _read_some(client, stream, keys.group),
                           lambda: _done(client, stream, keys, n, mode, invalid), own)
    finally:
        _clean(client, prefix, 1)


def run_breaker(client: redis.Redis, url: str, n: int) -> Row:
    """bench/bench_app.py's handler: the ok path with the default ``CircuitBreaker()``."""
    prefix = f"cap{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}-b"
    keys = HandlerKeys(stream, "bench.noop")
    _publish(client, stream, n)
    env = dict(os.environ, BENCH_STREAM=stream, BENCH_BREAKER="1", SEAWALL_REDIS_URL=url,
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    own = _clients(client)
    procs = [_spawn(url, "bench.bench_app:app", "bench", 0, env)]
    try:
        with _running(procs):
            return measure(client, "ok, breaker", n, procs,
                           _read_some(client, stream, keys.group),
                           lambda: _done(client, stream, keys, n, "ok", False), own)
    finally:
        _clean(client, prefix, 1)
        client.hdel(REGISTRY, keys.handler)


def run_saga_step(client: redis.Redis, url: str, n: int) -> Row:
    """bench/saga_app.py's saga, ``n // 3`` sagas (so about ``n`` step messages)."""
    from bench.saga_app import STREAMS, Order, build

    sagas = max(1, n // 3)
    prefix = f"capsaga{uuid.uuid4().hex[:8]}"
    app, saga = build("saga", prefix)
    assert saga is not None
    try:
        for i in range(sagas):
            saga.start_sync(Order(n=i, order_id=f"o-{i}", amount_cents=500 + i),
                            saga_id=f"o-{i}")
        own = _clients(client)
        procs = [bench_sagas._spawn(url, "saga", prefix)]
        first = HandlerKeys(saga.keys.on(STREAMS[0]), f"{prefix}.charge")
        with _running(procs):
            row = measure(client, "saga step (3-step saga)", 3 * sagas, procs,
                          _read_some(client, first.stream, first.group),
                          lambda: saga_store.counts_sync(client, saga.keys)["completed"]
                          >= sagas, own)
        counts = saga_store.counts_sync(client, saga.keys)
        if counts["completed"] != sagas or sum(counts.values()) != sagas:
            raise RuntimeError(f"saga run ended with {counts}, expected {sagas} completed")
        return row
    finally:
        app.close()
        bench_sagas._delete_matching(client, f"seawall:{{{saga.keys.tag}}}:*")
        bench_sagas._forget_handlers(client, app)


def median(rows: list[Row]) -> Row:
    """The round with the median Redis CPU per message (the figure the model rests on)."""
    return sorted(rows, key=lambda r: r.redis_us)[len(rows) // 2]


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def print_table(rows: list[Row]) -> None:
    print(f"\n{'path':<36} {'procs':>5} {'messages':>8} {'msgs/s':>8} {'pool us/msg':>11} "
          f"{'Redis us/msg':>12} {'cmds/msg':>8} {'net B/msg':>9} "
          f"{'Redis busy':>10} {'conns':>5}")
    for r in rows:
        rate = f"{r.rate:.0f}" if r.processes else "-"
        pool = _fmt(r.pool_us) if r.processes else "-"
        print(f"{r.name:<36} {r.processes:>5} {r.messages:>8} {rate:>8} {pool:>11} "
              f"{_fmt(r.redis_us, 2):>12} {_fmt(r.commands, 2):>8} {_fmt(r.net_bytes, 0):>9} "
              f"{r.redis_busy * 100:>9.0f}% {r.clients:>5}")
    print("\nRedis commands per message, by command (calls per message, us in the command "
          "per message)")
    for r in rows:
        top = sorted(r.calls, key=lambda c: -r.calls[c])
        parts = [f"{c} {r.per_message(r.calls[c]):.3f} ({r.per_message(r.usec[c]):.2f} us)"
                 for c in top if r.per_message(r.calls[c]) >= 0.0005]
        print(f"  {r.name}: {', '.join(parts) or '-'}")


def print_model(rows: list[Row], publish: Row | None, headroom: float) -> None:
    """Processes and shards for each target rate, per path.

    A pool process is planned at ``headroom`` of one core: ``headroom * 1e6 / pool us per
    message`` (its CPU time, which neighbours on a shared machine disturb less than its wall
    rate, shown beside it); a shard likewise at ``headroom * 1e6 / Redis us per message``,
    the publish's Redis CPU added to each path's (every message is XADDed to the shard that
    hands it out)."""
    pub_us = publish.redis_us if publish is not None else 0.0
    print(f"\ncapacity model: one core per pool process and per Redis shard, planned at "
          f"{headroom * 100:.0f}%; publish's {pub_us:.2f} us/msg of Redis CPU added to each "
          "path")
    head = "".join(f" {f'procs@{t // 1000}k':>11} {f'shards@{t // 1000}k':>12}"
                   for t in TARGETS)
    print(f"{'path':<36} {'measured/proc':>13} {'msgs/s/proc':>11} {'Redis us/msg':>12} "
          f"{'msgs/s/shard':>12}{head}")
    for r in rows:
        if not r.processes:
            continue
        measured = r.rate / r.processes
        # all processes' CPU per message (at least 0.01 us: a tiny run may round to 0)
        per_proc = headroom * 1e6 / max(r.pool_us, 0.01)
        redis_us = r.redis_us + pub_us
        per_shard = headroom * 1e6 / max(redis_us, 0.01)
        cells = "".join(f" {math.ceil(t / per_proc):>11} {math.ceil(t / per_shard):>12}"
                        for t in TARGETS)
        print(f"{r.name:<36} {measured:>13.0f} {per_proc:>11.0f} {redis_us:>12.2f} "
              f"{per_shard:>12.0f}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000, help="messages per row")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat each row; the table shows its median round")
    parser.add_argument("--headroom", type=float, default=0.7,
                        help="share of a Redis core the model plans to use")
    parser.add_argument("--redis-url", default=None,
                        help="a Redis to use instead of a throwaway one of the script's own")
    args = parser.parse_args()
    if args.redis_url is None:
        from workers.cli.private_redis import PrivateRedis

        with PrivateRedis() as server:
            run(args, server.url)
    else:
        run(args, args.redis_url)


def run(args: argparse.Namespace, url: str) -> None:
    os.environ["SEAWALL_REDIS_URL"] = url  # the saga app built here reads it
    client = redis.Redis.from_url(url)
    n = args.n
    plans: list[Callable[[], Row]] = [
        lambda: run_publish(client, n),
        lambda: run_scale_path(client, url, n, "ok (breaker=None)"),
        lambda: run_breaker(client, url, n),
        lambda: run_scale_path(client, url, n, "follow-up (to another slot)", "followup"),
        lambda: run_scale_path(client, url, n, "retry (all fail once)", "fail_once"),
        lambda: run_scale_path(client, url, n, "dead letter (all invalid)", invalid=True),
        lambda: run_scale_path(client, url, n, "idempotent", "idempotent"),
        lambda: run_saga_step(client, url, n),
        lambda: run_scale_path(client, url, n, "ok (breaker=None), 2 processes", processes=2),
    ]
    rows: list[Row] = []
    for plan in plans:
        row = median([plan() for _ in range(max(1, args.rounds))])
        rows.append(row)
        print(f"  {row.name}: {row.seconds:.2f} s", file=sys.stderr, flush=True)
    print(f"\n{n} messages per row, median of {max(1, args.rounds)} round(s); Redis us/msg: "
          "the redis-server main thread's CPU")
    print_table(rows)
    publish = next((r for r in rows if not r.processes), None)
    print_model(rows, publish, args.headroom)


if __name__ == "__main__":
    main()
