"""Peers: seawall against other Python queue frameworks on Redis, at their best settings, on
one machine, in one run.

Every run drains N pre-enqueued small messages ({"n": i, "order_id": f"o-{i}",
"amount_cents": 500 + i}) with a no-op handler that validates the message with the same
pydantic model (async wherever the framework runs async handlers).

Each peer is first run once with each of a handful of settings taken from its own tuning
advice (the sweep), then its fastest setting is measured again, in ``--rounds`` rounds
interleaved with seawall and the raw loop (the final table): picking the best of single
noisy runs favours a lucky one, measuring it again does not. The settings tried
(``python bench/peers.py --list`` prints them):

    seawall      the pool process of bench/throughput.py (``run_seawall``), 200 async tasks,
                 one process, batches of 100 (its defaults)
    raw          the raw redis-py loop of bench/throughput.py (``run_raw``), the yardstick
    arq          ``max_jobs`` 10 (arq's default), 50, 200, 1000; ``poll_delay`` 0.01 s
                 (bench/peer_apps/arq_app.py), ``queue_read_limit`` arq's default
    dramatiq     ``--processes``, ``--threads``, prefetch (``dramatiq_queue_prefetch``,
                 default 2 per thread), the actor async or sync: its defaults (8 threads),
                 16 threads, one thread with prefetch 100 and 1000, 4 threads, two
                 processes, and a sync actor (an async one waits on a thread for the
                 event loop's thread)
    taskiq       ``--workers``, ``--max-async-tasks``, ``--max-prefetch``, the stream read's
                 ``xread_count``: its defaults (100 tasks), 200, 1000 with prefetch and
                 batch 500, two workers
    faststream   ``--workers``, ``max_workers`` (concurrent handlers, default 1) and
                 ``max_records`` (entries per XREADGROUP)
    streaq       ``concurrency`` 16 (its default), 200, 1000, and ``prefetch``
    celery       ``--pool`` solo / threads / prefork, ``--concurrency``, and
                 ``worker_prefetch_multiplier`` 4 (its default) and 128 (Celery's
                 optimizing guide: short tasks want a large multiplier, 64 or 128)

The peers may use more than one process (``processes``/``workers`` > 1) where their own
docs advise it; seawall and raw always run one. On a machine of two cores a peer with two
processes has twice the CPU seawall has: the ``CPU us/msg`` column, summed over the worker's
processes, is the fair comparison then.

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
                          [--sweep-rounds 1] [--list]

Run it with the project's interpreter (``.venv/bin/python``): seawall and raw run from there,
the peers from ``bench/.peers-venv``. The peers live in their own virtualenv, not in the
project's ``bench`` extra, because arq and taskiq-redis pin ``redis<6`` (and kombu
``redis<6.5``) while the project's venv runs redis 8; installing them there would
downgrade the client the tests run against. One venv satisfies all six peers (redis 5.3),
at the price of taskiq 0.12 with taskiq-redis 1.0.9: later taskiq-redis need redis>=6.

``--sweep-rounds 0`` skips the sweep and measures each peer's first setting (its defaults,
or the nearest to them). Rounds of the final table are interleaved as in
bench/throughput.py (each round starts with the next run); it shows each run's median
round, and ``seawall x`` = seawall's msgs/s / the row's. A peer whose package is missing is
skipped with a line saying why; so is one whose every setting fails.
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
from collections.abc import Callable, Mapping
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

Setting = Mapping[str, int | str]
"""One configuration of a peer: knob -> value, in the order the label names them. Each
knob reaches the peer's app as ``BENCH_<KNOB>`` (bench/peer_apps reads them) and, where the
worker's CLI takes it, as an argument."""

Probe = Callable[[redis.Redis, str, int], bool]
"""(client, run id, n) -> whether the run has started / is done."""


def label(setting: Setting) -> str:
    """``processes 1, threads 16, prefetch 32``: the setting, named as the table shows it
    (each knob by the name of the option or argument it sets)."""
    return ", ".join(f"{k} {v}" for k, v in setting.items())


@dataclass(frozen=True)
class Peer:
    name: str
    packages: tuple[str, ...]
    """Its distributions, the first the one whose version the table shows."""
    module: str
    """The app module in bench/peer_apps; ``python -m <module> enqueue`` enqueues."""
    argv: Callable[[Setting], list[str]]
    """The worker's command after ``python``, for a setting."""
    settings: tuple[Setting, ...]
    """The settings the sweep tries, the first its defaults (or the nearest to them)."""
    started: Probe
    done: Probe
    start_signal: str
    done_signal: str
    extra_env: Callable[[Setting], dict[str, str]] = lambda s: {}
    """Environment the framework itself reads (dramatiq's prefetch)."""


def setting_env(peer: Peer, setting: Setting) -> dict[str, str]:
    """``BENCH_<KNOB>`` for every knob of the setting, and the peer's own variables."""
    env = {f"BENCH_{k.upper()}": str(v) for k, v in setting.items()}
    env.update(peer.extra_env(setting))
    return env


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


def _celery_worker(s: Setting) -> list[str]:
    """The prefetch multiplier reaches the app as BENCH_PREFETCH_MULTIPLIER (its conf)."""
    return ["-m", "celery", "-A", "bench.peer_apps.celery_app", "worker", "--pool",
            str(s["pool"]), "--concurrency", str(s["concurrency"]), "--loglevel", "WARNING",
            "--without-heartbeat", "--without-gossip", "--without-mingle", "-Q", "bench"]


def _celery_done(client: redis.Redis, run: str, n: int) -> bool:
    return (client.llen(_celery_key(run, "bench")) == 0
            and client.hlen(_celery_key(run, "unacked")) == 0)


def _dramatiq_worker(s: Setting) -> list[str]:
    return ["-m", "dramatiq", "bench.peer_apps.dramatiq_app", "--processes",
            str(s["processes"]), "--threads", str(s["threads"])]


def _taskiq_worker(s: Setting) -> list[str]:
    """``xread_count`` reaches the broker as BENCH_XREAD_COUNT."""
    return ["-m", "taskiq", "worker", "bench.peer_apps.taskiq_app:broker", "--workers",
            str(s["workers"]), "--max-async-tasks", str(s["max_async_tasks"]),
            "--max-prefetch", str(s["max_prefetch"]), "--log-level", "WARNING"]


def _faststream_worker(s: Setting) -> list[str]:
    """``max_workers`` and ``max_records`` reach the subscriber as BENCH_MAX_WORKERS and
    BENCH_MAX_RECORDS."""
    return ["-m", "faststream", "run", "bench.peer_apps.faststream_app:app", "--workers",
            str(s["workers"]), "--log-level", "warning"]


def _dramatiq(processes: int, threads: int, prefetch: int, actor: str = "async") -> Setting:
    return {"processes": processes, "threads": threads, "prefetch": prefetch, "actor": actor}


def _taskiq(workers: int, tasks: int, prefetch: int, batch: int) -> Setting:
    return {"workers": workers, "max_async_tasks": tasks, "max_prefetch": prefetch,
            "xread_count": batch}


def _faststream(workers: int, max_workers: int, max_records: int) -> Setting:
    return {"workers": workers, "max_workers": max_workers, "max_records": max_records}


def _celery(pool: str, concurrency: int, multiplier: int) -> Setting:
    return {"pool": pool, "concurrency": concurrency, "prefetch_multiplier": multiplier}


PEERS: dict[str, Peer] = {p.name: p for p in [
    Peer("arq", ("arq",), "bench.peer_apps.arq_app",
         lambda s: ["-m", "bench.peer_apps.arq_app", "worker"],
         ({"max_jobs": 10}, {"max_jobs": 50}, {"max_jobs": 200}, {"max_jobs": 1000}),
         _started_marker, lambda client, run, n: client.zcard(queue_name(run, "arq")) == 0,
         "first handler call (SET once)", "job zset empty (ZREM on finish)"),
    Peer("dramatiq", ("dramatiq",), "bench.peer_apps.dramatiq_app", _dramatiq_worker,
         (_dramatiq(1, 8, 16), _dramatiq(1, 16, 32), _dramatiq(1, 1, 100),
          _dramatiq(1, 1, 1000), _dramatiq(1, 4, 100), _dramatiq(2, 1, 100),
          _dramatiq(1, 1, 100, "sync")),
         _list_below(_dramatiq_key),
         lambda client, run, n: (client.llen(_dramatiq_key(run)) == 0
                                 and client.hlen(_dramatiq_key(run, ".msgs")) == 0),
         "first fetch (queue list shrinks)", "list and .msgs hash empty (acked)",
         extra_env=lambda s: {"dramatiq_queue_prefetch": str(s["prefetch"])}),
    Peer("taskiq", ("taskiq", "taskiq-redis"), "bench.peer_apps.taskiq_app", _taskiq_worker,
         (_taskiq(1, 100, 0, 100), _taskiq(1, 200, 0, 100), _taskiq(1, 1000, 500, 500),
          _taskiq(2, 200, 0, 100)),
         _group_read(_stream("taskiq"), GROUP), _group_drained(_stream("taskiq"), GROUP),
         "first group read", "group: no lag, none pending"),
    Peer("faststream", ("faststream",), "bench.peer_apps.faststream_app", _faststream_worker,
         (_faststream(1, 1, 100), _faststream(1, 50, 100), _faststream(1, 200, 100),
          _faststream(1, 200, 1000), _faststream(2, 200, 100)),
         _group_read(_stream("faststream"), GROUP),
         _group_drained(_stream("faststream"), GROUP),
         "first group read", "group: no lag, none pending"),
    Peer("streaq", ("streaq",), "bench.peer_apps.streaq_app",
         lambda s: ["-m", "bench.peer_apps.streaq_app", "worker"],
         ({"concurrency": 16, "prefetch": 16}, {"concurrency": 200, "prefetch": 200},
          {"concurrency": 1000, "prefetch": 1000}, {"concurrency": 200, "prefetch": 1000}),
         _group_read(_streaq_stream, "workers"), _streaq_done,
         "first group read", "stream empty (XACK+XDEL), none pending"),
    Peer("celery", ("celery", "kombu"), "bench.peer_apps.celery_app", _celery_worker,
         (_celery("solo", 1, 4), _celery("threads", 16, 4), _celery("solo", 1, 128),
          _celery("threads", 4, 128), _celery("prefork", 2, 128)),
         _list_below(lambda run: _celery_key(run, "bench")), _celery_done,
         "first fetch (queue list shrinks)", "list and unacked hash empty (acks_late)"),
]}


class Skip(Exception):
    """A peer (or one of its settings) that cannot run here; the message says why."""


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
    group holds only it and the processes it forked), then SIGKILL whatever is left after
    3 s: the run is measured by then, and some wait long for their consumers to stop."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
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
    seconds from start to done, peak RSS (MB, the largest of the worker's processes), CPU
    seconds of the worker's process tree."""
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


def run_peer(client: redis.Redis, url: str, python: Path, peer: Peer, setting: Setting,
             name: str, n: int, timeout: float) -> Result:
    run = f"bench-peer-{peer.name}-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, BENCH_PEER_RUN=run, BENCH_REDIS_URL=url, BENCH_N=str(n),
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               **setting_env(peer, setting))
    with tempfile.TemporaryFile() as log:
        proc: subprocess.Popen[bytes] | None = None
        try:
            subprocess.run([str(python), "-m", peer.module, "enqueue"], env=env, cwd=ROOT,
                           check=True, stdout=log, stderr=log, timeout=timeout)
            proc = subprocess.Popen([str(python), *peer.argv(setting)], env=env,
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
    return Result(name, n, seconds, rss, cpu)


@dataclass
class Tried:
    """One setting of the sweep: its runs' median, or why it failed."""
    setting: Setting
    result: Result | None
    error: str | None = None


def best(tried: list[Tried]) -> Tried | None:
    """The setting with the highest msgs/s among those that ran; None if none did."""
    ran = [t for t in tried if t.result is not None]
    return max(ran, key=lambda t: t.result.rate if t.result else 0.0) if ran else None


def _row(r: Result, seawall: Result, note: str) -> str:
    rss = f"{r.peak_rss_mb:.1f}" if r.peak_rss_mb else "-"
    cpu = f"{r.cpu_us_per_message:.1f}" if r.cpu_us_per_message is not None else "-"
    return (f"{r.name:<20} {r.messages:>7} {r.seconds:>8.3f} {r.rate:>9.0f} {cpu:>10} "
            f"{rss:>8} {seawall.rate / r.rate:>9.2f}  {note}")


def _header(last: str) -> str:
    return (f"{'run':<20} {'msgs':>7} {'seconds':>8} {'msgs/s':>9} {'CPU us/msg':>10} "
            f"{'RSS MB':>8} {'seawall x':>9}  {last}")


def list_settings(peers: list[Peer]) -> None:
    for p in peers:
        print(f"{p.name}:")
        for s in p.settings:
            print(f"  {label(s)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true",
                        help=f"create {VENV.relative_to(ROOT)} with the peers, and exit")
    parser.add_argument("--list", action="store_true",
                        help="print each peer's settings the sweep tries, and exit")
    parser.add_argument("--n", type=int, default=20_000, help="messages for seawall and raw")
    parser.add_argument("--peer-n", type=int, default=5_000, help="messages for each peer")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the final table (best settings)")
    parser.add_argument("--sweep-rounds", type=int, default=1,
                        help="runs of each setting in the sweep (0: no sweep, each peer's "
                             "first setting)")
    parser.add_argument("--only", default="", help=f"peers, comma separated: {','.join(PEERS)}")
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
    peers = [PEERS[w] for w in wanted]
    if args.list:
        list_settings(peers)
        return
    client = redis.Redis.from_url(args.redis_url)
    url, n, peer_n = args.redis_url, args.n, args.peer_n
    python = args.peers_venv / "bin" / "python"

    skipped: dict[str, str] = {}
    labels: dict[str, str] = {}
    versions: dict[str, str | None] = {}
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
    runnable = [p for p in peers if p.name not in skipped]

    def measure(p: Peer, s: Setting) -> Result:
        return run_peer(client, url, python, p, s, labels[p.name], peer_n, args.timeout)

    # The sweep: every setting of every peer, one after the other.
    sweep: dict[str, list[Tried]] = {}
    for p in runnable:
        sweep[p.name] = []
        for s in p.settings if args.sweep_rounds > 0 else p.settings[:1]:
            print(f"sweep: {p.name} {label(s)} ...", file=sys.stderr, flush=True)
            runs: list[Result] = []
            error: str | None = None
            for _ in range(max(1, args.sweep_rounds)):
                try:
                    runs.append(measure(p, s))
                except Skip as e:
                    error = str(e)
                    break
            sweep[p.name].append(Tried(s, median_round(runs) if error is None else None, error))
    chosen: dict[str, Setting] = {}
    for p in runnable:
        top = best(sweep[p.name])
        if top is None:
            skipped[p.name] = "every setting failed"
        else:
            chosen[p.name] = top.setting

    def peer_run(p: Peer) -> Callable[[], Result]:
        return lambda: measure(p, chosen[p.name])

    variants: list[tuple[str, Callable[[], Result]]] = [
        ("raw", lambda: run_raw(client, url, n)),
        ("seawall", lambda: run_seawall(client, url, n, name="seawall")),
        *((p.name, peer_run(p)) for p in runnable if p.name in chosen),
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
                skipped[name] = f"failed at its best setting: {e}"

    results = {name: median_round(rs) for name, rs in rounds.items()
               if rs and name not in skipped}
    seawall = results["seawall"]
    sweep_note = (f"{args.sweep_rounds} run(s) of each setting, median"
                  if args.sweep_rounds > 0 else "no sweep: each peer's first setting")
    print(f"\nsweep ({sweep_note}); each peer drains {peer_n} messages; "
          "'seawall x' against the final table's seawall run:")
    print(_header("setting"))
    for p in runnable:
        top = best(sweep[p.name])
        for t in sweep[p.name]:
            mark = " (best)" if t is top else ""
            if t.result is not None:
                print(_row(t.result, seawall, label(t.setting) + mark))
            else:
                why = (t.error or "").splitlines()[0]
                print(f"{labels[p.name]:<20} failed: {why}  {label(t.setting)}")

    print(f"\nbest settings, median of {max(1, args.rounds)} interleaved rounds; seawall and "
          f"raw drain {n} messages, each peer {peer_n} (msgs/s is per second, so the two N "
          "compare);")
    print("seawall, raw, taskiq, faststream, streaq time from the first stream read; the others "
          "from the start signal below. 'seawall x' = seawall msgs/s / the row's msgs/s.")
    print(_header("settings"))
    print(_row(results["raw"], seawall, "XREADGROUP COUNT 100, sequential, 1 process"))
    print(_row(seawall, seawall, "200 async tasks, 1 process"))
    for p in runnable:
        if p.name in results:
            print(_row(results[p.name], seawall, label(chosen[p.name])))
    print("\nsignals (start -> done):")
    print("  seawall, raw: first group read -> group: no lag, none pending")
    for p in runnable:
        if p.name in results:
            installed = ", ".join(f"{name} {versions[name]}" for name in p.packages)
            print(f"  {p.name} ({installed}): {p.start_signal} -> {p.done_signal}")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    print(f"ratio: {seawall.rate / results['raw'].rate:.2f}")


if __name__ == "__main__":
    main()
