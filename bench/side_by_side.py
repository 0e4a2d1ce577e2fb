"""A variant's cost per message, measured beside the plain pool: two pool processes on one
CPU core, each draining its own stream, taking turns of 20 ms (one is stopped with
SIGSTOP while the other runs), and the CPU each spends per message compared over the
same seconds.

    python bench/side_by_side.py [--n 550000] [--windows 20] [--seconds 0.5]
                                 [--slice 0.02] [--pairs 2]
                                 [--runs signed,unchecked,swapped]

Why not one run after the other (bench/throughput.py): on a shared machine the speed of a
core changes from one minute to the next by more than a cost of a few percent, and the
order of the runs matters too (a run right after another one's clean-up is measurably
cheaper). Two pools taking turns of a few milliseconds meet the same speed, the same
neighbours and the same Redis, so the ratio of their CPU per message is left with the
difference of their code; and each runs alone in its turn, as a pool runs in production
(``--slice 0`` runs both at once instead, sharing the core's caches, which makes every
cost look larger). Each pool is CPU-bound in its turn, so the ratio of the messages each
handles in a window (the same running time) is the ratio of their throughputs.

Each pool is one process of bench/bench_app.py (a no-op handler, so a variant's cost is the
largest share of a message it can ever be), pinned to ``--cpu``; Redis runs where it runs.
Both streams are published before the pools start (``--n`` messages each, enough for every
window). After start-up, each window counts, for each pool, the messages acknowledged (the
group's reads minus its pending entries) and the CPU time of all its threads
(``/proc/<pid>/task/*/schedstat``, in nanoseconds), and prints the variant's CPU per
message and messages over the plain pool's. Each variant runs as ``--pairs`` pairs of new
pool processes, in turn the plain stream published and the plain pool started and given
the first turn, then the variant's, and the other way round. Two processes of the same
code differ by a few per cent from one pair to the next (which comes first, where memory
lands, how the process's random hash seed places its dict keys), so both pools of a pair
get the same ``PYTHONHASHSEED``, a new one for each pair, and the table ends with the
medians of all windows of all pairs: more pairs, less of that spread left.

Variants (``--runs``): ``signed``, every message signed with HMAC-SHA256 and checked by the
pool (``App(signing_keys=)``, as ``bench/throughput.py --runs signed``); ``unchecked``, the
same signed messages read by a pool without keys (what the signature field alone costs a
reader); ``nobreaker``, the handler without its circuit breaker (``breaker=None``: below
1, what the breaker costs); ``swapped``, the plain app beside itself, which shows what the
method reads as a cost when there is none.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import ROOT, _group, _publish, pool_command

sys.path.insert(0, str(ROOT))
from queues.keys import HandlerKeys

GROUP = "bench.noop"
VARIANTS: dict[str, tuple[dict[str, bool], dict[str, bool]]] = {
    "signed": ({"signed": True}, {"signed": True}),
    "unchecked": ({"signed": True}, {}),
    "nobreaker": ({}, {"breaker": False}),
    "swapped": ({}, {}),
}
"""Each variant's keyword arguments to ``_publish`` and to ``pool_command``."""


def cpu_ns(pid: int) -> int:
    """Nanoseconds on a CPU of every thread of ``pid`` so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended between the listing and the read
    return total


@dataclass
class Pool:
    name: str
    stream: str
    proc: subprocess.Popen[bytes]

    def acked(self, client: redis.Redis) -> int:
        info = _group(client, self.stream, GROUP)
        return 0 if info is None else info["read"] - info["pending"]

    def sample(self, client: redis.Redis) -> tuple[int, int]:
        return self.acked(client), cpu_ns(self.proc.pid)


def published(client: redis.Redis, n: int, **options: bool) -> str:
    """A new stream holding ``n`` messages."""
    stream = f"bench-side-{uuid.uuid4().hex[:8]}"
    _publish(client, stream, n, **options)
    return stream


def start(url: str, name: str, stream: str, cpu: int, hash_seed: int,
          **options: bool) -> Pool:
    argv, env = pool_command(url, stream, **options)
    env["PYTHONHASHSEED"] = str(hash_seed)
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    return Pool(name, stream, proc)


def stop(client: redis.Redis, pool: Pool) -> None:
    pool.proc.terminate()
    try:
        pool.proc.wait(10)
    except subprocess.TimeoutExpired:
        pool.proc.kill()
    keys = HandlerKeys(pool.stream, GROUP)
    client.delete(pool.stream, keys.retry, keys.delayed, keys.dlq, keys.breaker)


@contextmanager
def taking_turns(pools: list[Pool], slice_seconds: float) -> Iterator[None]:
    """With ``slice_seconds``, one pool runs while the other is stopped (SIGSTOP), in
    turns of that long; without, both run at once."""
    if not slice_seconds:
        yield
        return
    done = threading.Event()

    def alternate() -> None:
        running = 0
        os.kill(pools[1].proc.pid, signal.SIGSTOP)
        while not done.wait(slice_seconds):
            os.kill(pools[running].proc.pid, signal.SIGSTOP)
            running ^= 1
            os.kill(pools[running].proc.pid, signal.SIGCONT)

    turns = threading.Thread(target=alternate, daemon=True)
    turns.start()
    try:
        yield
    finally:
        done.set()
        turns.join()
        for pool in pools:
            os.kill(pool.proc.pid, signal.SIGCONT)


def compare(client: redis.Redis, url: str, variant: str, n: int, windows: int,
            seconds: float, cpu: int, slice_seconds: float,
            plain_first: bool, hash_seed: int) -> list[tuple[float, float]]:
    """Per window, the variant's CPU per message and messages over the plain pool's.
    ``plain_first``: the plain stream is published, and the plain pool started and given
    the first turn, before the variant's (else after)."""
    publish, pool = VARIANTS[variant]
    if plain_first:
        plain_stream = published(client, n)
        other_stream = published(client, n, **publish)
        plain = start(url, "plain", plain_stream, cpu, hash_seed)
        other = start(url, variant, other_stream, cpu, hash_seed, **pool)
    else:
        other_stream = published(client, n, **publish)
        plain_stream = published(client, n)
        other = start(url, variant, other_stream, cpu, hash_seed, **pool)
        plain = start(url, "plain", plain_stream, cpu, hash_seed)
    ratios: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 60
        while min(plain.acked(client), other.acked(client)) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the pools did not start reading within 60 s")
            time.sleep(0.05)
        time.sleep(seconds)  # the rest of start-up: imports done, the first batches in
        with taking_turns([plain, other] if plain_first else [other, plain], slice_seconds):
            ratios = windowed(client, plain, other, variant, n, windows, seconds)
        if variant == "signed" and client.xlen(HandlerKeys(other.stream, GROUP).dlq):
            raise SystemExit("signed: messages were dead-lettered: the wrong path was counted")
    finally:
        stop(client, plain)
        stop(client, other)
    return ratios


def windowed(client: redis.Redis, plain: Pool, other: Pool, variant: str, n: int,
             windows: int, seconds: float) -> list[tuple[float, float]]:
    """Per window, the variant's CPU per message and messages over the plain pool's."""
    ratios: list[tuple[float, float]] = []
    before = [plain.sample(client), other.sample(client)]
    print(f"{'window':>6} {'plain msgs':>11} {'us/msg':>7} {variant + ' msgs':>13} "
          f"{'us/msg':>7} {'CPU/msg':>8} {'msgs':>6}")
    for w in range(windows):
        time.sleep(seconds)
        after = [plain.sample(client), other.sample(client)]
        (pm, pc), (om, oc) = [(a[0] - b[0], a[1] - b[1])
                              for a, b in zip(after, before, strict=True)]
        before = after
        if min(pm, om) == 0 or max(a[0] for a in after) >= n:
            raise SystemExit(f"window {w + 1}: a stream ran dry; raise --n")
        cpu, msgs = (oc / om) / (pc / pm), om / pm
        ratios.append((cpu, msgs))
        print(f"{w + 1:>6} {pm:>11,} {pc / pm / 1000:>7.2f} {om:>13,} "
              f"{oc / om / 1000:>7.2f} {cpu:>8.3f} {msgs:>6.3f}", flush=True)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=550_000, help="messages in each stream")
    parser.add_argument("--windows", type=int, default=20, help="windows in each pair")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of a window")
    parser.add_argument("--slice", type=float, default=0.02,
                        help="seconds each pool runs alone before the other's turn; 0: "
                             "both at once")
    parser.add_argument("--pairs", type=int, default=2,
                        help="pairs of pool processes for each variant, every other one "
                             "with the plain pool first")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                        help="the core both pools run on")
    parser.add_argument("--runs", default="signed", help="variants, comma separated: "
                        + ", ".join(VARIANTS))
    parser.add_argument("--redis-url", default=os.environ.get("SEAWALL_REDIS_URL",
                                                               "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(runs) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown runs: {', '.join(sorted(unknown))}")
    client = redis.Redis.from_url(args.redis_url)
    summary = []
    for variant in runs:
        ratios = []
        for pair in range(args.pairs):
            plain_first = pair % 2 == 0
            hash_seed = random.randrange(2**32)
            print(f"\n{variant} beside plain, both on CPU {args.cpu}, "
                  f"{'plain' if plain_first else variant} first, "
                  f"PYTHONHASHSEED={hash_seed}")
            ratios += compare(client, args.redis_url, variant, args.n, args.windows,
                              args.seconds, args.cpu, args.slice, plain_first, hash_seed)
        summary.append((variant, ratios))
    turns = (f"taking turns of {args.slice:g} s" if args.slice
             else "both at once")
    print(f"\nover the plain pool's, {args.pairs} pairs x {args.windows} windows of "
          f"{args.seconds:g} s (every other pair the plain pool first), both pools on one "
          f"core, {turns}")
    print(f"{'run':<10} {'CPU/msg median':>15} {'min':>7} {'max':>7}"
          + (f" {'msgs median':>12}" if args.slice else ""))
    for variant, ratios in summary:
        cpus = [cpu for cpu, _ in ratios]
        line = (f"{variant:<10} {statistics.median(cpus):>15.3f} {min(cpus):>7.3f} "
                f"{max(cpus):>7.3f}")
        if args.slice:
            line += f" {statistics.median(msgs for _, msgs in ratios):>12.3f}"
        print(line)


if __name__ == "__main__":
    main()
