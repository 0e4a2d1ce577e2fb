"""Latency: from a producer's XADD to the handler's call, at steady rates, seawall's pool
process beside a raw redis.asyncio loop, in the same run.

    python bench/latency.py [--rates 1000,5000] [--seconds 10] [--warmup 1]
                            [--layout together|apart] [--rounds 1]

The two consumers run in the same process layout: one process each, started (and seen
reading) before the producer begins.

    seawall  ``python -m workers.runtime.process bench.latency_app:app latency 0``: an async
             handler that validates the message (pydantic) and records
             ``time.time_ns() - sent_ns`` (bench/latency_app.py)
    raw      bench/raw_latency_consumer.py: XREADGROUP COUNT 100 BLOCK, the same
             validation and measurement, one pipelined XACK per batch

The producer is this script's own process: a raw redis-py client that XADDs seawall
envelopes (``queues.envelope.encode``) carrying a ``sent_ns`` field (``time.time_ns()`` just
before the pipeline is sent) at the steady rate, paced by the monotonic clock in bursts
every ``--burst-ms`` (1 ms: as many messages as are due, one pipeline). Each run lasts
``--seconds``; messages sent in its first ``--warmup`` seconds are left out. When the run
ends, the producer sends a last entry marked ``bench_end``, on which each consumer writes
its (sent_ns, latency_ns) pairs to a file named on its command line or in its environment.

``--layout together`` (the default) runs both consumers at once, each on its own stream,
the producer writing every burst to both streams in one pipeline (which stream comes first
alternating from burst to burst), so that a noisy moment on a shared machine hits both
alike: the tail of a run is mostly such moments, and two runs one after the other can
differ by several times at p99 while the ratio of two consumers run together stays within
about 20% (seawall against itself: 0.85 to 1.24 over four runs on a 2-core machine). The
price is that each consumer competes with the other for the CPU. ``--layout apart`` runs
them one after the other instead (the order alternating from rate to rate), each with the
machine to itself but for the producer and Redis.

With ``--rounds`` above 1 every run is repeated, the order of the consumers alternating
from round to round, and the table shows for each rate and consumer its round with the
median p99 (on a shared machine a busy neighbour can spoil one run's tail).

The table shows, per rate and consumer: messages measured, the latency's p50, p99, p99.9
and max in milliseconds, and the consumer process's CPU time per message sent; then, per
rate, ``p99 ratio at <rate>: <seawall p99 / raw p99>``.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run as a script, bench/ is sys.path[0] and the root is not

from bench.throughput import _cpu_seconds, _group  # noqa: E402
from queues.envelope import encode  # noqa: E402
from queues.keys import HandlerKeys  # noqa: E402

SEAWALL_HANDLER = "bench.latency"
RAW_GROUP = "raw"
READY_TIMEOUT = 30.0
END_TIMEOUT = 30.0


@dataclass
class Consumer:
    """One consumer process under test, and where its samples go."""

    name: str
    stream: str
    group: str
    out: Path
    proc: subprocess.Popen[bytes] | None = None
    cpu: float = 0.0
    """CPU seconds the process spent while the producer ran."""

    def start(self, url: str) -> None:
        if self.name == "seawall":
            env = dict(os.environ, BENCH_LATENCY_STREAM=self.stream,
                       BENCH_LATENCY_OUT=str(self.out), SEAWALL_REDIS_URL=url,
                       PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
            argv = [sys.executable, "-m", "workers.runtime.process", "bench.latency_app:app",
                    "latency", "0", "--log-level", "WARNING"]
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT)
        else:
            argv = [sys.executable, str(HERE / "raw_latency_consumer.py"), url, self.stream,
                    self.group, str(self.out)]
            self.proc = subprocess.Popen(argv)

    def reading(self, client: redis.Redis) -> bool:
        """The consumer has read and acked the first entry (see :func:`_wait_ready`)."""
        info = _group(client, self.stream, self.group)
        return info is not None and info["read"] >= 1 and info["pending"] == 0

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Row:
    rate: int
    consumer: str
    messages: int
    p50: float
    p99: float
    p999: float
    max: float
    cpu_us: float | None


def median_p99(rounds: list[Row]) -> Row:
    return sorted(rounds, key=lambda r: r.p99)[len(rounds) // 2]


def percentile(ordered: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def _wait_ready(client: redis.Redis, consumers: list[Consumer]) -> None:
    """Send each consumer one message and wait until it has been handled and acked: the
    consumer is then reading (a blocked XREADGROUP does not show in XINFO CONSUMERS). Its
    sample predates the run and is left out with the warm-up."""
    for c in consumers:
        first = _message(-1)
        first["sent_ns"] = str(time.time_ns())
        client.xadd(c.stream, cast(Any, first))
    deadline = time.monotonic() + READY_TIMEOUT
    pending = list(consumers)
    while pending:
        for c in list(pending):
            if c.proc is not None and c.proc.poll() is not None:
                raise RuntimeError(f"{c.name} consumer exited early with code "
                                   f"{c.proc.returncode}")
            if c.reading(client):
                pending.remove(c)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{[c.name for c in pending]} did not start reading")
        time.sleep(0.02)
    time.sleep(0.3)  # let the next blocking read settle in


def _message(i: int) -> dict[str, str | bytes]:
    return encode({"n": i, "order_id": f"o-{i}", "amount_cents": 500 + i}, type="Order")


def produce(client: redis.Redis, streams: list[str], rate: int, seconds: float,
            burst_s: float) -> tuple[int, int, float]:
    """XADD ``rate`` messages a second to every stream of ``streams`` for ``seconds``, in
    bursts every ``burst_s``; returns the wall-clock start (ns), messages sent per stream,
    and how far (s) the producer fell behind its schedule at worst."""
    start_ns = time.time_ns()
    t0 = time.monotonic()
    sent = 0
    tick = 0
    worst_behind = 0.0
    order = list(streams)
    while True:
        now = time.monotonic()
        elapsed = now - t0
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) - sent
        if due > 0:
            batch = [_message(sent + i) for i in range(due)]
            with client.pipeline(transaction=False) as pipe:
                sent_ns = str(time.time_ns())
                for fields in batch:
                    fields["sent_ns"] = sent_ns
                    for stream in order:
                        pipe.xadd(stream, cast(Any, fields))
                pipe.execute()
            sent += due
            order.reverse()  # together: neither stream always gets the burst first
        tick += 1
        wake = t0 + tick * burst_s
        now = time.monotonic()
        worst_behind = max(worst_behind, now - wake)
        if wake > now:
            time.sleep(wake - now)
    return start_ns, sent, worst_behind


def _send_end(client: redis.Redis, streams: list[str]) -> None:
    """The last entry: on it, each consumer writes its samples."""
    end = _message(-1)
    end["bench_end"] = "1"
    end["sent_ns"] = str(time.time_ns())
    with client.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xadd(stream, cast(Any, end))
        pipe.execute()


def _read_samples(path: Path, since_ns: int) -> list[int]:
    samples = array("q")
    with path.open("rb") as f:
        samples.fromfile(f, path.stat().st_size // samples.itemsize)
    sent, latency = samples[0::2], samples[1::2]
    return sorted(lat for s, lat in zip(sent, latency, strict=True) if s >= since_ns)


def run(client: redis.Redis, url: str, rate: int, names: list[str], args: argparse.Namespace,
        tmp: Path) -> list[Row]:
    """One run: start ``names``' consumers, produce at ``rate``, collect their samples."""
    run_id = uuid.uuid4().hex[:8]
    consumers: list[Consumer] = []
    for name in names:
        stream = f"bench-lat-{name}-{run_id}"
        group = HandlerKeys(stream, SEAWALL_HANDLER).group if name == "seawall" else RAW_GROUP
        consumers.append(Consumer(name, stream, group, tmp / f"{name}-{rate}-{run_id}.bin"))
    try:
        for c in consumers:
            c.start(url)
        _wait_ready(client, consumers)
        procs = [c.proc for c in consumers if c.proc is not None]
        cpu0 = [_cpu_seconds(p.pid) for p in procs]
        streams = [c.stream for c in consumers]
        start_ns, sent, behind = produce(client, streams, rate, args.seconds,
                                         args.burst_ms / 1000)
        time.sleep(0.05)  # the last burst's messages are handled
        for c, proc, before in zip(consumers, procs, cpu0, strict=True):
            c.cpu = _cpu_seconds(proc.pid) - before
        _send_end(client, streams)
        deadline = time.monotonic() + END_TIMEOUT
        for c, proc in zip(consumers, procs, strict=True):
            while not c.out.exists():
                if proc.poll() is not None and not c.out.exists():
                    raise RuntimeError(f"{c.name} consumer exited with code "
                                       f"{proc.returncode} before writing its samples")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{c.name} consumer wrote no samples")
                time.sleep(0.02)
        if behind > 0.05:
            print(f"  (at {rate}/s the producer fell up to {behind * 1000:.0f} ms behind its "
                  f"schedule)", file=sys.stderr)
        rows = []
        since = start_ns + int(args.warmup * 1e9)
        for c in consumers:
            lat = _read_samples(c.out, since)
            if not lat:
                raise RuntimeError(f"{c.name}: no samples after the warm-up")
            ms = 1e-6
            rows.append(Row(rate, c.name, len(lat), percentile(lat, 0.50) * ms,
                            percentile(lat, 0.99) * ms, percentile(lat, 0.999) * ms,
                            lat[-1] * ms, c.cpu / sent * 1e6 if sent else None))
        return rows
    finally:
        for c in consumers:
            c.stop()
            c.out.unlink(missing_ok=True)
            keys = [c.stream, *client.scan_iter(match=f"seawall:{{{c.stream}}}:*")]
            client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="1000,5000",
                        help="messages per second, comma separated (default 1000,5000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds at the start of each run left out (default 1)")
    parser.add_argument("--burst-ms", type=float, default=1.0,
                        help="the producer sends what is due every this many ms (default 1)")
    parser.add_argument("--layout", choices=("together", "apart"), default="together")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every run; the table shows the median-p99 round")
    parser.add_argument("--redis-url", default=os.environ.get("SEAWALL_REDIS_URL",
                                                               "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    if not rates or min(rates) < 1:
        parser.error("--rates needs positive integers")
    if args.warmup >= args.seconds:
        parser.error("--warmup must be shorter than --seconds")
    client = redis.Redis.from_url(args.redis_url)
    measured: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="seawall-latency-") as tmp:
        for r in range(max(1, args.rounds)):
            for i, rate in enumerate(rates):
                names = ["seawall", "raw"] if (i + r) % 2 == 0 else ["raw", "seawall"]
                if args.layout == "together":
                    measured += run(client, args.redis_url, rate, names, args, Path(tmp))
                else:
                    for name in names:
                        measured += run(client, args.redis_url, rate, [name], args, Path(tmp))
    rows = [median_p99([m for m in measured if m.rate == rate and m.consumer == name])
            for rate in rates for name in ("raw", "seawall")]
    rounds = f", median-p99 round of {args.rounds}" if args.rounds > 1 else ""
    print(f"\npublish-to-handler latency, {args.seconds:g} s per run, the first "
          f"{args.warmup:g} s left out, layout {args.layout}{rounds}")
    print(f"{'rate/s':>7} {'consumer':<9} {'messages':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'p99.9 ms':>9} {'max ms':>8} {'CPU us/msg':>11}")
    for row in rows:
        cpu = f"{row.cpu_us:.1f}" if row.cpu_us is not None else "-"
        print(f"{row.rate:>7} {row.consumer:<9} {row.messages:>9} {row.p50:>8.3f} "
              f"{row.p99:>8.3f} {row.p999:>9.3f} {row.max:>8.3f} {cpu:>11}")
    for rate in rates:
        by = {r.consumer: r for r in rows if r.rate == rate}
        print(f"p99 ratio at {rate}: {by['seawall'].p99 / by['raw'].p99:.2f}")


if __name__ == "__main__":
    main()
