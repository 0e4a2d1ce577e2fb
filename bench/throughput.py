"""Throughput: seawall's pool process against a raw redis-py loop, in the same run.

Both drain N pre-published messages (small JSON, validated by a pydantic model, async no-op
handler) from their own stream, each in its own process, and both are timed the same way
from outside: from the first entry read (the group's ``entries-read`` moves) until the group
has no lag and nothing pending. Process start-up is thus left out of both.

    python bench/throughput.py [--n 20000] [--rounds 3]
    python bench/throughput.py --cluster [--n 30000] [--rounds 3]   (bench/cluster_throughput.py)
                               [--runs followup,fail10,nobreaker,idempotent,tracing,metrics,signed]

``--runs`` picks the extra runs (default: ``followup``; ``--runs ''`` for none).
``followup`` is consume-transform-produce: the seawall handler publishes one follow-up per
message to another stream (``await ctx.publish(...)``), beside a raw loop that, per batch
of 100, sends one pipeline with an XADD per message and the XACK
(bench/raw_followup_consumer.py). Both are done only when, besides the source group's
having no lag and nothing pending, the target stream holds N entries (seawall's follow-ups
may become visible a moment after their ack). ``fail10``, ``nobreaker`` and ``idempotent``
are seawall variants, each compared with the plain seawall run. ``tracing`` (the ``otel``
extra) traces with OpenTelemetry at 1 % sampling (a parent-based TraceIdRatioBased(0.01)
sampler, spans exported to nothing), its messages published as a traced producer at
that rate writes them: each with a ``traceparent``, 1 % of them flagged sampled.

``signed`` signs every message (HMAC-SHA256, ``App(signing_keys=)``) and runs the pool with
the same key, so each message's signature is checked before it is decoded.

``metrics`` runs the same pool under ``seawall run --metrics-port`` (the supervisor, its pipe
to the pool process, the counting per message), with JSON logs at INFO, scraping ``/metrics``
every second as a Prometheus would; at the end it checks that the scrape counted every
message, and compares its msgs/s with the plain seawall run's (a pool process alone).

Each variant runs ``--rounds`` times, the variants interleaved (each round starting with the
next one) so that a noisy moment on a shared machine hits all of them alike; the table shows
each variant's median round, and the consumer process's CPU time per message, which a busy
neighbour disturbs less than wall time. It ends with ``ratio: <seawall msgs/s / raw msgs/s>``,
and with the follow-up runs ``followup ratio: <seawall follow-up msgs/s / raw follow-up msgs/s>``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    peak_rss_mb: float | None
    cpu_seconds: float | None = None
    """CPU time (user + system) the consumer process spent over the same span."""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("inf")

    @property
    def cpu_us_per_message(self) -> float | None:
        if self.cpu_seconds is None or not self.messages:
            return None
        return self.cpu_seconds / self.messages * 1e6


def _paired(runs: list[Result], plain: list[Result]) -> tuple[float, float | None]:
    """Medians of the round-by-round ratios of a variant to the plain seawall run (msgs/s,
    CPU per message). Each round runs both within seconds, so a machine that is slower for
    a minute slows both: the ratio of one round cancels it, where the ratio of the two
    medians, taken from different rounds, does not. Tells a cost of a few percent, given
    tens of rounds, on a machine whose single runs vary by a third."""
    rates = sorted(r.rate / p.rate for r, p in zip(runs, plain, strict=True))
    cpus = sorted(r.cpu_us_per_message / p.cpu_us_per_message
                  for r, p in zip(runs, plain, strict=True)
                  if r.cpu_us_per_message and p.cpu_us_per_message)
    return rates[len(rates) // 2], (cpus[len(cpus) // 2] if cpus else None)


def median_round(results: list[Result]) -> Result:
    """The median round by wall time; CPU time is the median of its own (less noisy: it does
    not count the moments another program had the CPU)."""
    ordered = sorted(results, key=lambda r: r.seconds)
    middle = ordered[len(ordered) // 2]
    peak = max((r.peak_rss_mb or 0.0) for r in results) or None
    cpus = sorted(r.cpu_seconds for r in results if r.cpu_seconds is not None)
    cpu = cpus[len(cpus) // 2] if cpus else None
    return Result(middle.name, middle.messages, middle.seconds, peak, cpu)


SIGNING_KEY = "bench-signing-key-0123456789abcdef0123456789"
"""The key of the ``signed`` run (a benchmark's, not a secret)."""


def _publish(client: redis.Redis, stream: str, n: int, *, sampled: float | None = None,
             invalid: bool = False, signed: bool = False) -> None:
    """N orders; with ``sampled``, each with a ``traceparent`` of a trace of its own, that
    share of them flagged sampled; ``invalid``: every one fails validation (``n`` is not a
    number)."""
    sys.path.insert(0, str(ROOT))
    from queues.envelope import encode
    from queues.signing import Keyring

    keyring = Keyring({"k1": SIGNING_KEY}, "k1") if signed else None
    rng = random.Random(n)
    for start in range(0, n, 1000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 1000)):
                fields = encode({"n": f"#{i}" if invalid else i, "order_id": f"o-{i}",
                                 "amount_cents": 500 + i}, type="Order")
                if sampled is not None:
                    flags = "01" if rng.random() < sampled else "00"
                    fields["traceparent"] = (f"00-{rng.getrandbits(128):032x}-"
                                             f"{rng.getrandbits(64):016x}-{flags}")
                if keyring is not None:
                    keyring.sign(fields, stream)
                pipe.xadd(stream, fields)
            pipe.execute()


def _group(client: redis.Redis, stream: str, group: str) -> dict[str, int] | None:
    try:
        for info in client.xinfo_groups(stream):
            name = info["name"]
            if (name.decode() if isinstance(name, bytes) else name) == group:
                return {"read": int(info.get("entries-read") or 0),
                        "lag": int(info.get("lag") or 0), "pending": int(info["pending"])}
    except redis.ResponseError:
        return None
    return None


def _descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(c) for c in children]
    for c in list(out):
        out += _descendants(c)
    return out


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def _time_drain(client: redis.Redis, proc: subprocess.Popen[bytes], stream: str, group: str,
                n: int, expect_done: int, extra_done: Callable[[], bool] | None = None,
                timeout: float = 600.0) -> tuple[float, float | None, float]:
    """Seconds from the first read until everything is handled (and ``extra_done()``, if
    given, says the rest is done too); peak RSS (MB); and the CPU seconds the consumer spent
    in that span. The first read is placed halfway between the last poll that saw nothing
    read and the first that saw a read, so that a drain shorter than one poll still
    measures a time (not 0 s, and an infinite rate)."""
    t0: float | None = None
    cpu0 = 0.0
    deadline = time.monotonic() + timeout
    rss: float | None = None
    before = time.monotonic()
    """When a poll last saw nothing read."""
    while time.monotonic() < deadline:
        info = _group(client, stream, group)
        now = time.monotonic()
        if info and info["read"] > 0 and t0 is None:
            t0 = (before + now) / 2
            cpu0 = _cpu_seconds(proc.pid)
        elif t0 is None:
            before = now
        done = info is not None and info["read"] >= n and info["lag"] == 0 and info["pending"] == 0
        if done and extra_done is not None:
            done = extra_done()
        if done and t0 is not None:
            cpu = _cpu_seconds(proc.pid) - cpu0
            for pid in [proc.pid, *_descendants(proc.pid)]:
                rss = max(rss or 0.0, _peak_rss_mb(pid) or 0.0)
            return now - t0, rss, cpu
        if proc.poll() is not None and not done:
            raise RuntimeError(f"consumer exited early with code {proc.returncode}")
        time.sleep(0.005)
    raise TimeoutError("drain did not finish")


def _extra_idle(client: redis.Redis, delayed: str, retry_stream: str, group: str) -> bool:
    """With retries: nothing delayed and nothing unread or pending on the retry stream."""
    if client.zcard(delayed):
        return False
    info = _group(client, retry_stream, group)
    return info is None or (info["lag"] == 0 and info["pending"] == 0)


def _holds(client: redis.Redis, stream: str, n: int) -> Callable[[], bool]:
    """Done signal of the follow-up runs: ``stream`` holds (at least) ``n`` entries."""
    return lambda: int(client.xlen(stream)) >= n


def run_raw(client: redis.Redis, url: str, n: int) -> Result:
    stream = f"bench-raw-{uuid.uuid4().hex[:8]}"
    _publish(client, stream, n)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "raw_consumer.py"), url, stream, "raw", str(n)])
    try:
        seconds, rss, cpu = _time_drain(client, proc, stream, "raw", n, n)
        proc.wait(30)
    finally:
        proc.kill()
        client.delete(stream)
    return Result("raw redis-py loop", n, seconds, rss, cpu)


def run_raw_followup(client: redis.Redis, url: str, n: int) -> Result:
    stream = f"bench-rawf-{uuid.uuid4().hex[:8]}"
    target = f"{stream}-out"
    _publish(client, stream, n)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "raw_followup_consumer.py"), url, stream, "raw", target,
         str(n)])
    try:
        seconds, rss, cpu = _time_drain(client, proc, stream, "raw", n, n,
                                        _holds(client, target, n))
        proc.wait(30)
    finally:
        proc.kill()
        client.delete(stream, target)
    return Result("raw loop, follow-up", n, seconds, rss, cpu)


def pool_command(url: str, stream: str, *, fail_every: int = 0, tracing: bool = False,
                 breaker: bool = True, idempotent: bool = False, follow_up_stream: str = "",
                 signed: bool = False) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one pool process of bench/bench_app.py
    draining ``stream`` (run from ``ROOT``)."""
    env = dict(os.environ, BENCH_STREAM=stream, BENCH_FAIL_EVERY=str(fail_every),
               BENCH_TRACING="1" if tracing else "0",
               BENCH_BREAKER="1" if breaker else "0",
               BENCH_IDEMPOTENT="1" if idempotent else "0",
               BENCH_FOLLOW_UP_STREAM=follow_up_stream,
               BENCH_SIGNING_KEY=SIGNING_KEY if signed else "",
               SEAWALL_REDIS_URL=url,
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    argv = [sys.executable, "-m", "workers.runtime.process", "bench.bench_app:app", "bench",
            "0", "--log-level", "WARNING", "--log-format", "json"]
    return argv, env


def run_seawall(client: redis.Redis, url: str, n: int, *, name: str, fail_every: int = 0,
                breaker: bool = True, idempotent: bool = False,
                follow_up: bool = False, tracing: bool = False,
                invalid: bool = False, signed: bool = False) -> Result:
    sys.path.insert(0, str(ROOT))
    from queues.keys import HandlerKeys

    stream = f"bench-sw-{uuid.uuid4().hex[:8]}"
    target = f"{stream}-out" if follow_up else ""
    keys = HandlerKeys(stream, "bench.noop")
    _publish(client, stream, n, sampled=0.01 if tracing else None, invalid=invalid,
             signed=signed)
    argv, env = pool_command(url, stream, fail_every=fail_every, tracing=tracing,
                             breaker=breaker, idempotent=idempotent, follow_up_stream=target,
                             signed=signed)
    log = tempfile.TemporaryFile() if invalid else None
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=log)
    checks: list[Callable[[], bool]] = []
    if invalid:
        checks.append(_holds(client, keys.dlq, n))
    seconds = float("nan")
    if fail_every:
        checks.append(lambda: _extra_idle(client, keys.delayed, keys.retry, keys.group))
    if follow_up:
        checks.append(_holds(client, target, n))
    try:
        seconds, rss, cpu = _time_drain(client, proc, stream, keys.group, n, n,
                                        (lambda: all(c() for c in checks)) if checks else None)
        if signed and client.xlen(keys.dlq):
            raise SystemExit(f"{name}: {client.xlen(keys.dlq)} messages were dead-lettered "
                             "(signatures refused): the run measured the wrong path")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        client.delete(stream, keys.retry, keys.delayed, keys.dlq, keys.breaker)
        if log is not None:
            log.seek(0)
            lines = sum(1 for _ in log)
            log.close()
            print(f"{name}: {lines} log lines for {n} dead letters in {seconds:.1f} s")
        if follow_up:
            client.delete(target, *client.scan_iter(match=f"seawall:{{{stream}}}:*"))
        if idempotent:
            done = list(client.scan_iter(match=keys.done("*"), count=1000))
            for start in range(0, len(done), 1000):
                client.delete(*done[start:start + 1000])
    return Result(name, n, seconds, rss, cpu)


def _scrape_ok(port: int, handler: str) -> float | None:
    """``seawall_messages_processed_total{outcome="ok"}`` of ``handler``, or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if (line.startswith("seawall_messages_processed_total{")
                and f'handler="{handler}"' in line and 'outcome="ok"' in line):
            return float(line.rsplit(" ", 1)[1])
    return None


def run_seawall_metrics(client: redis.Redis, url: str, n: int) -> Result:
    """The plain seawall run's pool, started by ``seawall run --metrics-port`` (metrics on,
    JSON logs at INFO), scraped every second while it drains."""
    sys.path.insert(0, str(ROOT))
    from queues.keys import HandlerKeys
    from workers.cli.private_redis import free_port

    stream = f"bench-swm-{uuid.uuid4().hex[:8]}"
    keys = HandlerKeys(stream, "bench.noop")
    _publish(client, stream, n)
    port = free_port()
    env = dict(os.environ, BENCH_STREAM=stream, SEAWALL_REDIS_URL=url,
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with tempfile.TemporaryFile() as logs:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers", "run", "bench.bench_app:app", "--metrics-port",
             str(port), "--log-level", "INFO", "--log-format", "json"],
            env=env, cwd=ROOT, stdout=logs, stderr=logs)
        scraping = threading.Event()

        def scrape_every_second() -> None:
            while not scraping.wait(1.0):
                _scrape_ok(port, keys.handler)

        scraper = threading.Thread(target=scrape_every_second, daemon=True)
        scraper.start()
        try:
            seconds, rss, cpu = _time_drain(client, proc, stream, keys.group, n, n)
            deadline = time.monotonic() + 10
            counted = _scrape_ok(port, keys.handler)
            while counted != n and time.monotonic() < deadline:
                time.sleep(0.2)  # (the pool reports once a second)
                counted = _scrape_ok(port, keys.handler)
            if counted != n:
                logs.seek(0)
                tail = logs.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"/metrics counted {counted} of {n} messages\n{tail}")
        finally:
            scraping.set()
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            client.delete(stream, keys.retry, keys.delayed, keys.dlq, keys.breaker)
    return Result("seawall, metrics on", n, seconds, rss, cpu)


def main() -> None:
    if "--cluster" in sys.argv[1:]:
        # The same comparison on a Redis Cluster, one consumer process per master.
        from cluster_throughput import main as cluster_main

        cluster_main([a for a in sys.argv[1:] if a != "--cluster"])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--redis-url", default=os.environ.get("SEAWALL_REDIS_URL",
                                                               "redis://127.0.0.1:6379/0"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", default="followup",
                        help="extra runs, comma separated: followup (the default), fail10, "
                             "nobreaker, idempotent, tracing, metrics, invalid, signed; "
                             "'' for none")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis_url)
    extra = {r.strip() for r in args.runs.split(",") if r.strip()}
    unknown = extra - {"metrics", "followup", "fail10", "nobreaker", "idempotent", "tracing",
                       "invalid", "signed"}
    if unknown:
        parser.error(f"unknown runs: {', '.join(sorted(unknown))}")
    url, n = args.redis_url, args.n
    variants: list[Callable[[], Result]] = [
        lambda: run_raw(client, url, n),
        lambda: run_seawall(client, url, n, name="seawall"),
    ]
    follow_up_at: int | None = None
    """Index of the raw follow-up run; the seawall follow-up run comes next."""
    if "followup" in extra:
        follow_up_at = len(variants)
        variants.append(lambda: run_raw_followup(client, url, n))
        variants.append(lambda: run_seawall(client, url, n, name="seawall, follow-up",
                                            follow_up=True))
    if "nobreaker" in extra:
        variants.append(lambda: run_seawall(client, url, n, name="seawall, breaker=None",
                                            breaker=False))
    if "idempotent" in extra:
        variants.append(lambda: run_seawall(client, url, n, name="seawall, idempotent=True",
                                            idempotent=True))
    if "fail10" in extra:
        variants.append(lambda: run_seawall(client, url, n, name="seawall, 10% fail once",
                                            fail_every=10))
    if "tracing" in extra:
        variants.append(lambda: run_seawall(client, url, n, name="seawall, tracing 1%",
                                            tracing=True))
    if "metrics" in extra:
        variants.append(lambda: run_seawall_metrics(client, url, n))
    if "signed" in extra:
        variants.append(lambda: run_seawall(client, url, n, name="seawall, signed",
                                            signed=True))
    if "invalid" in extra:
        variants.append(lambda: run_seawall(client, url, n, name="seawall, all invalid",
                                            invalid=True))
    rounds: list[list[Result]] = [[] for _ in variants]
    for r in range(max(1, args.rounds)):
        # Each round starts with the next variant, so that no variant always runs first
        # (or always right after another one's clean-up).
        for k in range(len(variants)):
            i = (r + k) % len(variants)
            rounds[i].append(variants[i]())
    results = [median_round(r) for r in rounds]
    raw, seawall = results[0], results[1]
    print(f"\nmedian of {max(1, args.rounds)} rounds, {n} messages each")
    print(f"{'run':<28} {'messages':>9} {'seconds':>8} {'msgs/s':>10} {'CPU us/msg':>11} "
          f"{'peak RSS MB':>12}")
    for r in results:
        rss = f"{r.peak_rss_mb:.1f}" if r.peak_rss_mb else "-"
        cpu = f"{r.cpu_us_per_message:.1f}" if r.cpu_us_per_message is not None else "-"
        print(f"{r.name:<28} {r.messages:>9} {r.seconds:>8.3f} {r.rate:>10.0f} {cpu:>11} "
              f"{rss:>12}")
    paired = set() if follow_up_at is None else {follow_up_at, follow_up_at + 1}
    for i, r in enumerate(results[2:], start=2):
        if i in paired:
            continue
        line = f"{r.name}: {r.rate / seawall.rate:.2f} of the seawall run's msgs/s"
        if r.cpu_us_per_message and seawall.cpu_us_per_message:
            line += f", {r.cpu_us_per_message / seawall.cpu_us_per_message:.2f} of its CPU/msg"
        print(line)
        if len(rounds[i]) >= 5:
            rate, cpu = _paired(rounds[i], rounds[1])
            print(f"  round by round: median {rate:.3f} of the msgs/s"
                  + (f", {cpu:.3f} of the CPU/msg" if cpu is not None else ""))
    print(f"ratio: {seawall.rate / raw.rate:.2f}")
    if follow_up_at is not None:
        raw_f, seawall_f = results[follow_up_at], results[follow_up_at + 1]
        print(f"followup ratio: {seawall_f.rate / raw_f.rate:.2f}")


if __name__ == "__main__":
    main()
