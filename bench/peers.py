"""Peers: seawall against other Python queue frameworks on Redis, on one machine, in one run.

Every run drains N pre-enqueued small messages ({"n": i, "order_id": f"o-{i}",
"amount_cents": 500 + i}) with one worker process and a no-op handler that validates the
message with the same pydantic model (async wherever the framework runs async handlers).
C = ``--concurrency`` (200) in-flight handlers, T = ``--threads`` (16) for thread pools:

    seawall      the pool process of bench/throughput.py (``run_seawall``), C async tasks
    raw          the raw redis-py loop of bench/throughput.py (``run_raw``), the yardstick
    arq          async job, ``max_jobs=C``, ``poll_delay=0.01`` (see bench/peer_apps/arq_app.py)
    dramatiq     Redis broker, async actor, ``--processes 1 --threads T``
    taskiq       taskiq-redis ``RedisStreamBroker`` (consumer group), ``--max-async-tasks C``
    faststream   Redis stream subscriber in a consumer group, ``max_workers=C``
    streaq       ``Worker(concurrency=C)`` (a consumer group on a stream)
    celery       Redis broker, sync task (Celery has none async), ``--pool threads -c T``
    celery-solo  the same with ``--pool solo`` (one task at a time: its fastest for a no-op)

Each peer enqueues with its own API (pipelined or batched where it has a way), before the
clock starts; its worker is then started as a subprocess of the peers' virtualenv, and is
timed from outside, by polling Redis, from the first sign that it consumed (the "start"
signal) until nothing is left queued, unacked or pending (the "done" signal). No handler
counts completions with an extra round trip: each framework's own bookkeeping in Redis tells
when it is done, and the output names which keys each run was judged by (arq's fetch leaves
no trace, so its handler SETs a key once, at its first call). Worker start-up is thus left
out everywhere, as bench/throughput.py leaves it out of seawall and raw. Since a failed
handler's message is acked or dead-lettered too, a run whose worker logged an error (all
run at WARNING, where each logs failures but no line per message) counts as failed.
Peers may drain a smaller N (``--peer-n``) than seawall (``--n``): rates are per second, so
runs with different N compare, though a small N weighs the first moments more.

    python bench/peers.py --setup            # once: bench/.peers-venv, peers-requirements.txt
    python bench/peers.py [--n 20000] [--peer-n 5000] [--rounds 3] [--only arq,celery]

Run it with the project's interpreter (``.venv/bin/python``): seawall and raw run from there,
the peers from ``bench/.peers-venv``. The peers live in their own virtualenv, not in the
project's ``bench`` extra, because arq and taskiq-redis pin ``redis<6`` (and kombu
``redis<6.5``) while the project's venv runs redis 8; installing them there would
downgrade the client the tests run against. One venv satisfies all six peers (redis 5.3),
at the price of taskiq 0.12 with taskiq-redis 1.0.9: later taskiq-redis need redis>=6.

Rounds are interleaved as in bench/throughput.py (each round starts with the next run); the
table shows each run's median round, and ``seawall x`` = seawall's msgs/s / the row's. A
peer whose package is missing is skipped with a line saying why; so is one that fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run as a script, bench/ is sys.path[0] and the root is not

from bench.peer_apps import GROUP, queue_name, started_key  # noqa: E402
from bench.throughput import (  # noqa: E402
    Result,
    _cpu_seconds,
    _descendants,
    _group,
    _peak_rss_mb,
    median_round,
    run_raw,
    run_seawall,
)

VENV = HERE / ".peers-venv"
REQUIREMENTS = HERE / "peers-requirements.txt"

Probe = Callable[[redis.Redis, str, int], bool]
"""(client, run id, n) -> whether the run has started / is done."""


@dataclass(frozen=True)
class Peer:
    name: str
    packages: tuple[str, ...]
    """Its distributions, the first the one whose version the table shows."""
    module: str
    """The app module in bench/peer_apps; ``python -m <module> enqueue`` enqueues."""
    argv: Callable[[int, int], list[str]]
    """The worker's command after ``python``, given (async concurrency, threads)."""
    concurrency: Callable[[int, int], str]
    started: Probe
    done: Probe
    start_signal: str
    done_signal: str


def _started_marker(client: redis.Redis, run: str, n: int) -> bool:
    return bool(client.exists(started_key(run)))


def _list_below(key: Callable[[str], str]) -> Probe:
    """Started: the broker's list has lost a message to a fetch."""
    return lambda client, run, n: int(client.llen(key(run))) < n


def _group_read(stream: Callable[[str], str], group: str) -> Probe:
    """Started: the consumer group has read an entry (bench/throughput.py's signal)."""
    def probe(client: redis.Redis, run: str, n: int) -> bool:
        info = _group(client, stream(run), group)
        return info is not None and info["read"] > 0
    return probe


def _group_drained(stream: Callable[[str], str], group: str) -> Probe:
    """Done: the group read all n, has no lag and nothing pending (as for seawall)."""
    def probe(client: redis.Redis, run: str, n: int) -> bool:
        info = _group(client, stream(run), group)
        return (info is not None and info["read"] >= n and info["lag"] == 0
                and info["pending"] == 0)
    return probe


def _dramatiq_key(run: str, suffix: str = "") -> str:
    return f"{queue_name(run, 'dramatiq')}:bench{suffix}"


def _celery_key(run: str, key: str) -> str:
    return f"{queue_name(run, 'celery')}:{key}"


def _stream(peer: str) -> Callable[[str], str]:
    return lambda run: queue_name(run, peer)


def _streaq_stream(run: str) -> str:
    return f"streaq:{queue_name(run, 'streaq')}:queues:normal"


def _streaq_done(client: redis.Redis, run: str, n: int) -> bool:
    """streaq XDELs each entry as it XACKs it, so the group's lag is not defined then."""
    info = _group(client, _streaq_stream(run), "workers")
    return (info is not None and info["read"] >= n and info["pending"] == 0
            and int(client.xlen(_streaq_stream(run))) == 0)


def _celery_worker(pool: str, concurrency: int) -> list[str]:
    return ["-m", "celery", "-A", "bench.peer_apps.celery_app", "worker", "--pool", pool,
            "--concurrency", str(concurrency), "--loglevel", "WARNING", "--without-heartbeat",
            "--without-gossip", "--without-mingle", "-Q", "bench"]


def _celery_done(client: redis.Redis, run: str, n: int) -> bool:
    return (client.llen(_celery_key(run, "bench")) == 0
            and client.hlen(_celery_key(run, "unacked")) == 0)


def _async(c: int, t: int) -> str:
    return f"{c} async tasks"


def _threads(c: int, t: int) -> str:
    return f"{t} threads"


PEERS: dict[str, Peer] = {p.name: p for p in [
    Peer("arq", ("arq",), "bench.peer_apps.arq_app",
         lambda c, t: ["-m", "bench.peer_apps.arq_app", "worker"], _async,
         _started_marker, lambda client, run, n: client.zcard(queue_name(run, "arq")) == 0,
         "first handler call (SET once)", "job zset empty (ZREM on finish)"),
    Peer("dramatiq", ("dramatiq",), "bench.peer_apps.dramatiq_app",
         lambda c, t: ["-m", "dramatiq", "bench.peer_apps.dramatiq_app", "--processes", "1",
                       "--threads", str(t)], _threads,
         _list_below(_dramatiq_key),
         lambda client, run, n: (client.llen(_dramatiq_key(run)) == 0
                                 and client.hlen(_dramatiq_key(run, ".msgs")) == 0),
         "first fetch (queue list shrinks)", "list and .msgs hash empty (acked)"),
    Peer("taskiq", ("taskiq", "taskiq-redis"), "bench.peer_apps.taskiq_app",
         lambda c, t: ["-m", "taskiq", "worker", "bench.peer_apps.taskiq_app:broker",
                       "--workers", "1", "--max-async-tasks", str(c), "--log-level", "WARNING"],
         _async, _group_read(_stream("taskiq"), GROUP), _group_drained(_stream("taskiq"), GROUP),
         "first group read", "group: no lag, none pending"),
    Peer("faststream", ("faststream",), "bench.peer_apps.faststream_app",
         lambda c, t: ["-m", "faststream", "run", "bench.peer_apps.faststream_app:app",
                       "--workers", "1", "--log-level", "warning"],
         _async, _group_read(_stream("faststream"), GROUP),
         _group_drained(_stream("faststream"), GROUP),
         "first group read", "group: no lag, none pending"),
    Peer("streaq", ("streaq",), "bench.peer_apps.streaq_app",
         lambda c, t: ["-m", "bench.peer_apps.streaq_app", "worker"], _async,
         _group_read(_streaq_stream, "workers"), _streaq_done,
         "first group read", "stream empty (XACK+XDEL), none pending"),
    Peer("celery", ("celery", "kombu"), "bench.peer_apps.celery_app",
         lambda c, t: _celery_worker("threads", t), _threads,
         _list_below(lambda run: _celery_key(run, "bench")), _celery_done,
         "first fetch (queue list shrinks)", "list and unacked hash empty (acks_late)"),
    # Celery's fastest pool for a no-op: no thread hand-off, one task at a time.
    Peer("celery-solo", ("celery", "kombu"), "bench.peer_apps.celery_app",
         lambda c, t: _celery_worker("solo", 1), lambda c, t: "1 (solo pool)",
         _list_below(lambda run: _celery_key(run, "bench")), _celery_done,
         "first fetch (queue list shrinks)", "list and unacked hash empty (acks_late)"),
]}


class Skip(Exception):
    """A peer that cannot run here; the message says why."""


def setup(venv: Path) -> None:
    """Create the peers' virtualenv and install seawall (editable) and the pinned peers."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", str(ROOT), "-r", str(REQUIREMENTS)], check=True)


def peer_versions(python: Path, peers: list[Peer]) -> dict[str, str | None]:
    """Each peer's installed version in the peers' venv, None where it is missing."""
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for p in sys.argv[1:]:\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: out[p] = None\n"
            "print(json.dumps(out))")
    names = sorted({name for p in peers for name in p.packages})
    reply = subprocess.run([str(python), "-c", code, *names],
                           check=True, capture_output=True, text=True)
    return dict(json.loads(reply.stdout))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group (it was started in a session of its own, so the
    group holds only it and the processes it forked), then SIGKILL whatever is left."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, so that only live members keep the group
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _cleanup(client: redis.Redis, run: str) -> None:
    """Delete every key of the run: each contains the run id (see bench/peer_apps)."""
    keys = list(client.scan_iter(match=f"*{run}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


def _time_until(client: redis.Redis, proc: subprocess.Popen[bytes], started: Callable[[], bool],
                done: Callable[[], bool], timeout: float) -> tuple[float, float | None, float]:
    """Like bench/throughput.py's ``_time_drain``, with the peer's own start/done probes:
    seconds from start to done, peak RSS (MB), CPU seconds of the worker's process tree."""
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
            raise RuntimeError(f"worker exited early with code {proc.returncode}")
        time.sleep(0.005)
    raise TimeoutError(f"not done after {timeout:.0f} s"
                       + ("" if t0 is not None else " (never started)"))


def run_peer(client: redis.Redis, url: str, python: Path, peer: Peer, label: str, n: int,
             concurrency: int, threads: int, timeout: float) -> Result:
    run = f"bench-peer-{peer.name}-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, BENCH_PEER_RUN=run, BENCH_REDIS_URL=url, BENCH_N=str(n),
               BENCH_CONCURRENCY=str(concurrency),
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with tempfile.TemporaryFile() as log:
        proc: subprocess.Popen[bytes] | None = None
        try:
            subprocess.run([str(python), "-m", peer.module, "enqueue"], env=env, cwd=ROOT,
                           check=True, stdout=log, stderr=log, timeout=timeout)
            proc = subprocess.Popen([str(python), *peer.argv(concurrency, threads)], env=env,
                                    cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
            seconds, rss, cpu = _time_until(
                client, proc, lambda: peer.started(client, run, n),
                lambda: peer.done(client, run, n), timeout)
            # A handler that failed gets its message acked or dead-lettered too, which the
            # done probes cannot tell from success; the worker logs it (all log at WARNING).
            log.seek(0)
            if re.search(rb"Traceback|\bERROR\b|\bCRITICAL\b", log.read()):
                raise RuntimeError("the worker logged errors")
        except (subprocess.SubprocessError, RuntimeError, TimeoutError, redis.RedisError) as e:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
            raise Skip(f"{e}" + "".join(f"\n    | {line}" for line in tail)) from e
        finally:
            if proc is not None:
                _stop(proc)
            _cleanup(client, run)
    return Result(label, n, seconds, rss, cpu)


def _row(r: Result, seawall: Result, note: str) -> str:
    rss = f"{r.peak_rss_mb:.1f}" if r.peak_rss_mb else "-"
    cpu = f"{r.cpu_us_per_message:.1f}" if r.cpu_us_per_message is not None else "-"
    return (f"{r.name:<20} {r.messages:>7} {r.seconds:>8.3f} {r.rate:>9.0f} {cpu:>10} "
            f"{rss:>8} {seawall.rate / r.rate:>9.2f}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true",
                        help=f"create {VENV.relative_to(ROOT)} with the peers, and exit")
    parser.add_argument("--n", type=int, default=20_000, help="messages for seawall and raw")
    parser.add_argument("--peer-n", type=int, default=5_000, help="messages for each peer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help=f"peers, comma separated: {','.join(PEERS)}")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="in-flight handlers for seawall and the async peers")
    parser.add_argument("--threads", type=int, default=16,
                        help="worker threads for the thread-pool peers (dramatiq, celery)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per peer run")
    parser.add_argument("--peers-venv", type=Path, default=VENV)
    parser.add_argument("--redis-url", default=os.environ.get("SEAWALL_REDIS_URL",
                                                               "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    if args.setup:
        setup(args.peers_venv)
        return

    wanted = [w for w in args.only.split(",") if w] or list(PEERS)
    unknown = [w for w in wanted if w not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    os.environ["BENCH_CONCURRENCY"] = str(args.concurrency)  # read by bench/bench_app.py
    client = redis.Redis.from_url(args.redis_url)
    url, n, peer_n = args.redis_url, args.n, args.peer_n
    python = args.peers_venv / "bin" / "python"

    skipped: dict[str, str] = {}
    labels: dict[str, str] = {}
    versions: dict[str, str | None] = {}
    peers = [PEERS[w] for w in wanted]
    if not python.exists():
        skipped.update({p.name: f"no {python}; run: python bench/peers.py --setup"
                        for p in peers})
    else:
        versions = peer_versions(python, peers)
        for p in peers:
            missing = [name for name in p.packages if versions.get(name) is None]
            if missing:
                skipped[p.name] = f"{', '.join(missing)} not installed in {args.peers_venv}"
            else:
                labels[p.name] = f"{p.name} {versions[p.packages[0]]}"

    def peer_run(p: Peer) -> Callable[[], Result]:
        return lambda: run_peer(client, url, python, p, labels[p.name], peer_n,
                                args.concurrency, args.threads, args.timeout)

    variants: list[tuple[str, Callable[[], Result]]] = [
        ("raw", lambda: run_raw(client, url, n)),
        ("seawall", lambda: run_seawall(client, url, n, name="seawall")),
        *((p.name, peer_run(p)) for p in peers if p.name not in skipped),
    ]
    rounds: dict[str, list[Result]] = {name: [] for name, _ in variants}
    for r in range(max(1, args.rounds)):
        # Each round starts with the next run, as in bench/throughput.py.
        for k in range(len(variants)):
            name, run = variants[(r + k) % len(variants)]
            if name in skipped:
                continue
            print(f"round {r + 1}: {name} ...", file=sys.stderr, flush=True)
            try:
                rounds[name].append(run())
            except Skip as e:
                skipped[name] = f"failed: {e}"

    results = {name: median_round(rs) for name, rs in rounds.items()
               if rs and name not in skipped}
    seawall = results["seawall"]
    print(f"\nmedian of {max(1, args.rounds)} rounds; seawall and raw drain {n} messages, "
          f"each peer {peer_n} (msgs/s is per second, so the two N compare);")
    print("seawall, raw, taskiq, faststream, streaq time from the first stream read; the others "
          "from the start signal below. 'seawall x' = seawall msgs/s / the row's msgs/s.")
    print(f"{'run':<20} {'msgs':>7} {'seconds':>8} {'msgs/s':>9} {'CPU us/msg':>10} "
          f"{'RSS MB':>8} {'seawall x':>9}  concurrency")
    print(_row(results["raw"], seawall, "XREADGROUP COUNT 100, sequential"))
    print(_row(seawall, seawall, f"{args.concurrency} async tasks"))
    for p in peers:
        if p.name in results:
            print(_row(results[p.name], seawall, p.concurrency(args.concurrency, args.threads)))
    print("\nsignals (start -> done):")
    print("  seawall, raw: first group read -> group: no lag, none pending")
    for p in peers:
        if p.name in results:
            installed = ", ".join(f"{name} {versions[name]}" for name in p.packages)
            print(f"  {p.name} ({installed}): {p.start_signal} -> {p.done_signal}")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    print(f"ratio: {seawall.rate / results['raw'].rate:.2f}")


if __name__ == "__main__":
    main()
