"""Cost growth: msgs/s, CPU time, Redis commands and peak RSS per message as the work grows.

One pool process (``python -m workers.runtime.process bench.scale_app:app scale 0``, the app
in bench/scale_app.py) drains messages published before it starts, timed from outside as
bench/throughput.py does: from the first entry read until every group has no lag and
nothing pending (and the path's own end: every dead letter written, nothing delayed or on a
retry stream, every follow-up published). CPU time is the pool process's own (from /proc)
over that span; Redis commands per message are the calls ``INFO commandstats`` counted over
that span (commands run by scripts included), less the ones the timing loop itself sends
(XINFO, XLEN, ZCARD, INFO) -- on a Redis nothing else uses (``--private-redis``), exact.

Rows:

- backlog: 10k and 100k messages waiting on one handler's stream (and 1M with
  ``--max 1000000``);
- handlers per pool process: 1, 10 and 50, each on a stream of its own, the ``--n``
  messages spread evenly over them;
- handlers per stream: 1, 10 and 50 handlers on one stream, each in its own consumer
  group, so each reads every entry: ``--n`` / handlers entries, ``--n`` messages handled
  in all (the same work as the row above, on one stream instead of one each);
- idle handlers: 1 busy handler beside 49 idle ones, all ``--n`` messages on the busy one;
- paths, 1 handler, ``--n`` messages: ok, dead letter (every message fails validation),
  retry (every message fails once, retried with ``wait_none``), idempotent
  (``idempotent=True``) and follow-up (each message publishes one with ``ctx.publish``);
- ``seawall status --json`` wall time, run as a subprocess, with 1 and with 100 handlers
  registered (by a pool process of the app, running, with empty streams).

    python bench/scale.py [--n 20000] [--max 100000] [--rounds 1] [--private-redis]
                          [--profile DIR]

``--rounds`` > 1 repeats each row and shows its median round. ``--profile DIR`` records the
pool process of each path row with py-spy (``--format raw``, 250 samples/s) into DIR and,
after the table, prints the functions where each path spends its samples; it runs the path
rows only (give it a large ``--n``: a drain of under a second is a few hundred samples).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import (  # noqa: E402
    _cpu_seconds,
    _extra_idle,
    _group,
    _peak_rss_mb,
    _publish,
)
from queues.keys import OUTCOMES, PROCESSES, REGISTRY, HandlerKeys  # noqa: E402

POLLER_COMMANDS = {"xinfo|groups", "xinfo", "xlen", "zcard", "info"}
"""What the timing loop sends; left out of the pool's commands per message."""


@dataclass
class Row:
    group: str
    name: str
    handlers: int
    messages: int
    seconds: float
    cpu_seconds: float | None = None
    commands: int | None = None
    peak_rss_mb: float | None = None

    @property
    def rate(self) -> float | None:
        if not self.messages:
            return None
        return self.messages / self.seconds if self.seconds > 0 else float("inf")


def _commandstats(client: redis.Redis) -> Counter[str]:
    out: Counter[str] = Counter()
    for name, stats in client.info("commandstats").items():
        command = name.removeprefix("cmdstat_")
        if command not in POLLER_COMMANDS:
            out[command] = int(stats["calls"])
    return out


def _env(url: str, prefix: str, handlers: int, mode: str,
         shared: bool = False) -> dict[str, str]:
    return dict(os.environ, SCALE_PREFIX=prefix, SCALE_HANDLERS=str(handlers), SCALE_MODE=mode,
                SCALE_SHARED="1" if shared else "0", SEAWALL_REDIS_URL=url,
                PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def _start_pool(url: str, prefix: str, handlers: int, mode: str,
                shared: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers.runtime.process", "bench.scale_app:app", "scale", "0",
         "--log-level", "WARNING", "--log-format", "json"],
        env=_env(url, prefix, handlers, mode, shared), cwd=ROOT,
        stderr=None if os.environ.get("SCALE_DEBUG") else subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _clean(client: redis.Redis, prefix: str, handlers: int) -> None:
    """Every key of the run (all carry the prefix, in their hash tags) and its handlers'
    registry and outcome fields."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"*{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)
    names = [f"scale.h{i}" for i in range(handlers)]
    client.hdel(REGISTRY, *names)
    if client.type(OUTCOMES) == b"hash":
        fields = [f for f in client.hkeys(OUTCOMES) if f.decode().startswith("scale.h")]
        if fields:
            client.hdel(OUTCOMES, *fields)


def _done(client: redis.Redis, stream: str, keys: HandlerKeys, n: int, mode: str,
          invalid: bool) -> bool:
    info = _group(client, stream, keys.group)
    if info is None or info["read"] < n or info["lag"] or info["pending"]:
        return False
    if invalid and int(client.xlen(keys.dlq)) < n:
        return False
    if mode == "fail_once" and not _extra_idle(client, keys.delayed, keys.retry, keys.group):
        return False
    return not (mode == "followup" and int(client.xlen(f"{stream}-out")) < n)


def _profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--format", "raw", "--rate", "250",
                             "--pid", str(pid), "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def drain(client: redis.Redis, url: str, *, group: str, name: str, handlers: int,
          spread: list[int], mode: str = "ok", invalid: bool = False, shared: bool = False,
          profile: Path | None = None, timeout: float = 1800.0) -> Row:
    """Publish ``spread[i]`` messages to handler i's stream, start the pool, time the drain.
    ``shared``: every handler on one stream, ``spread[0]`` entries, each read by all."""
    prefix = f"scale{uuid.uuid4().hex[:8]}"
    if shared:
        stream = f"{prefix}-0"
        busy = [(stream, HandlerKeys(stream, f"scale.h{i}"), spread[0])
                for i in range(handlers)]
        _publish(client, stream, spread[0], invalid=invalid)
    else:
        streams = [f"{prefix}-{i}" for i in range(handlers)]
        busy = [(s, HandlerKeys(s, f"scale.h{i}"), spread[i])
                for i, s in enumerate(streams) if spread[i]]
        for stream, _, n in busy:
            _publish(client, stream, n, invalid=invalid)
    total = sum(n for _, _, n in busy)
    proc = _start_pool(url, prefix, handlers, mode, shared)
    spy: subprocess.Popen[bytes] | None = None
    try:
        t0: float | None = None
        cpu0 = 0.0
        stats0: Counter[str] = Counter()
        pending = list(busy)
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: drain did not finish")
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: pool process exited with code {proc.returncode}")
            if t0 is None:
                if any((_group(client, s, k.group) or {"read": 0})["read"] > 0
                       for s, k, _ in busy):
                    t0 = time.monotonic()
                    cpu0 = _cpu_seconds(proc.pid)
                    stats0 = _commandstats(client)
                    if profile is not None:
                        spy = _profile(proc.pid, profile)
                else:
                    time.sleep(0.005)
                    continue
            pending = [p for p in pending if not _done(client, *p, mode, invalid)]
            if not pending:
                seconds = time.monotonic() - t0
                cpu = _cpu_seconds(proc.pid) - cpu0
                commands = sum((_commandstats(client) - stats0).values())
                rss = _peak_rss_mb(proc.pid)
                break
            time.sleep(0.01)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
        _stop(proc)
        if spy is not None:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        _clean(client, prefix, handlers)
    return Row(group, name, handlers, total, seconds, cpu, commands, rss)


def status_time(client: redis.Redis, url: str, handlers: int, rounds: int) -> Row:
    """Wall time of ``seawall status --json`` with ``handlers`` registered by a running pool."""
    prefix = f"scale{uuid.uuid4().hex[:8]}"
    proc = _start_pool(url, prefix, handlers, "ok")
    names = {f"scale.h{i}" for i in range(handlers)}
    try:
        deadline = time.monotonic() + 60
        while not names <= {k.decode() for k in client.hkeys(REGISTRY)} \
                or not client.hlen(PROCESSES):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the pool did not register its handlers")
            time.sleep(0.05)
        registered = int(client.hlen(REGISTRY))
        times = []
        for _ in range(max(3, rounds)):
            t = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "workers", "status", "--json",
                                   "--redis-url", url], cwd=ROOT, capture_output=True,
                                  env=_env(url, prefix, handlers, "ok"), timeout=120)
            times.append(time.monotonic() - t)
            if done.returncode != 0:
                raise RuntimeError(f"seawall status failed: {done.stderr.decode()[-2000:]}")
    finally:
        _stop(proc)
        _clean(client, prefix, handlers)
    return Row("status", f"seawall status --json ({registered} registered)", handlers, 0,
               statistics.median(times))


def median_row(rows: list[Row]) -> Row:
    ordered = sorted(rows, key=lambda r: r.seconds)
    middle = ordered[len(ordered) // 2]
    cpus = sorted(r.cpu_seconds for r in rows if r.cpu_seconds is not None)
    middle.cpu_seconds = cpus[len(cpus) // 2] if cpus else None
    middle.peak_rss_mb = max((r.peak_rss_mb or 0.0) for r in rows) or None
    return middle


def aggregate_profile(path: Path, top: int = 12) -> list[tuple[str, float, float]]:
    """(function, self share, inclusive share) of the samples in a py-spy raw file, by
    function, the top ``top`` by self share. Idle samples (the event loop waiting in
    ``select``/``epoll``) count in the total: the shares are of wall time."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        total += count
        self_counts[frames[-1]] += count
        for f in set(frames):
            incl_counts[f] += count
    if not total:
        return []
    return [(f, c / total, incl_counts[f] / total) for f, c in self_counts.most_common(top)]


def _function(frame: str) -> str:
    """``name (path/to/file.py:line)`` -> ``name (file.py)``."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if parts else file
    return f"{name} ({short})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000,
                        help="messages of the handler-count, idle-handler and path rows")
    parser.add_argument("--max", type=int, default=100_000,
                        help="largest backlog (10k, 100k, 1M up to this; at least one row)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--redis-url", default=os.environ.get("SEAWALL_REDIS_URL",
                                                               "redis://127.0.0.1:6379/0"))
    parser.add_argument("--private-redis", action="store_true",
                        help="run against a throwaway redis-server of its own (exact "
                             "commandstats and registry)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record each path row's pool process with py-spy into this "
                             "directory and print where each path spends its time")
    parser.add_argument("--status-handlers", type=int, default=100)
    args = parser.parse_args()
    if args.private_redis:
        from workers.cli.private_redis import PrivateRedis

        with PrivateRedis() as server:
            run(args, f"redis://127.0.0.1:{server.port}/0")
    else:
        run(args, args.redis_url)


def run(args: argparse.Namespace, url: str) -> None:
    client = redis.Redis.from_url(url)
    n = args.n
    backlogs = [b for b in (10_000, 100_000, 1_000_000) if b <= args.max] or [args.max]
    plans: list[tuple[str, Callable[[Path | None], Row]]] = []

    def add(group: str, name: str, handlers: int, spread: list[int], **kw: object) -> None:
        def go(profile: Path | None) -> Row:
            return drain(client, url, group=group, name=name, handlers=handlers, spread=spread,
                         profile=profile, **kw)  # type: ignore[arg-type]

        plans.append((group, go))

    profiling = args.profile is not None
    for b in [] if profiling else backlogs:
        add("backlog", f"backlog {b}", 1, [b])
    for h in () if profiling else (1, 10, 50):
        add("handlers", f"{h} handlers, {n // h} msgs each", h,
            [n // h + (1 if i < n % h else 0) for i in range(h)])
    for h in () if profiling else (1, 10, 50):
        add("stream", f"{h} handlers on 1 stream, {n // h} entries", h, [n // h], shared=True)
    if not profiling:
        add("idle", "1 busy + 49 idle handlers", 50, [n] + [0] * 49)
    paths = [("ok", "ok", False), ("dead letter (all invalid)", "ok", True),
             ("retry (all fail once)", "fail_once", False),
             ("idempotent", "idempotent", False), ("follow-up", "followup", False)]
    for label, mode, invalid in paths:
        add("path", label, 1, [n], mode=mode, invalid=invalid)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for i, (group, go) in enumerate(plans):
        done = []
        for r in range(max(1, args.rounds)):
            profile = None
            if args.profile is not None and group == "path" and r == 0:
                profile = args.profile / f"path-{i}.txt"
            done.append(go(profile))
        rows.append(median_row(done))
        print(f"  {rows[-1].name}: {rows[-1].seconds:.2f} s", file=sys.stderr, flush=True)
    for h in [] if profiling else sorted({1, args.status_handlers}):
        rows.append(status_time(client, url, h, args.rounds))
    print(f"\n{'run':<42} {'handlers':>8} {'messages':>9} {'seconds':>8} {'msgs/s':>8} "
          f"{'CPU us/msg':>10} {'cmds/msg':>8} {'peak RSS MB':>11}")
    for row in rows:
        rate = f"{row.rate:.0f}" if row.rate is not None else "-"
        cpu = (f"{row.cpu_seconds / row.messages * 1e6:.1f}"
               if row.cpu_seconds is not None and row.messages else "-")
        cmds = f"{row.commands / row.messages:.2f}" if row.commands is not None else "-"
        rss = f"{row.peak_rss_mb:.1f}" if row.peak_rss_mb else "-"
        print(f"{row.name:<42} {row.handlers:>8} {row.messages:>9} {row.seconds:>8.3f} "
              f"{rate:>8} {cpu:>10} {cmds:>8} {rss:>11}")
    if args.profile is not None:
        for i, (group, _) in enumerate(plans):
            path = args.profile / f"path-{i}.txt"
            if group != "path" or not path.exists():
                continue
            print(f"\nprofile: {rows[i].name} (share of samples: self, inclusive)")
            for function, own, incl in aggregate_profile(path):
                print(f"  {own * 100:5.1f}% {incl * 100:5.1f}%  {function}")


if __name__ == "__main__":
    main()
