"""A variant's cost per message, measured with the plain pool beside it: both pool processes
run at the same time on the same CPU core, each draining its own stream, and the CPU each
spends per message is compared over the same seconds.

    python bench/side_by_side.py [--n 300000] [--windows 10] [--seconds 1] [--runs signed]

Why not one run after the other (bench/throughput.py): on a shared machine the speed of a
core changes from one minute to the next by more than a cost of a few percent, and the
order of the runs matters too (a run right after another one's clean-up is measurably
cheaper). Two processes sharing one core at once meet the same speed, the same neighbours
and the same Redis, moment by moment, so the ratio of their CPU per message is left with
the difference of their code. The kernel shares the core between them; each spends what it
spends per message, and the cheaper one handles more messages in its share.

Each pool is one process of bench/bench_app.py (a no-op handler, so a variant's cost is the
largest share of a message it can ever be), pinned to ``--cpu``; Redis runs where it runs.
Both streams are published before the pools start (``--n`` messages each, enough for every
window). After the first window (start-up), each window counts, for each pool, the messages
acknowledged (the group's reads minus its pending entries) and the CPU time of all its
threads (``/proc/<pid>/task/*/schedstat``, in nanoseconds), and prints the variant's CPU
per message over the plain pool's. The table ends with the median of the windows' ratios.

Variants (``--runs``): ``signed``, every message signed with HMAC-SHA256 and checked by the
pool (``App(signing_keys=)``, as ``bench/throughput.py --runs signed``); ``unchecked``, the
same signed messages read by a pool without keys (what the signature field alone costs a
reader); ``swapped``, the plain app beside itself, which shows what the method reads as a
cost when there is none.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
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


def start(url: str, name: str, stream: str, cpu: int, **options: bool) -> Pool:
    argv, env = pool_command(url, stream, **options)
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


def compare(client: redis.Redis, url: str, variant: str, n: int, windows: int,
            seconds: float, cpu: int) -> list[float]:
    """The variant's CPU per message over the plain pool's, one ratio per window."""
    publish, pool = VARIANTS[variant]
    streams = [published(client, n), published(client, n, **publish)]
    plain = start(url, "plain", streams[0], cpu)
    other = start(url, variant, streams[1], cpu, **pool)
    ratios: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while min(plain.acked(client), other.acked(client)) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the pools did not start reading within 60 s")
            time.sleep(0.05)
        time.sleep(seconds)  # the rest of start-up: imports done, the first batches in
        before = [plain.sample(client), other.sample(client)]
        print(f"{'window':>6} {'plain msgs':>11} {'us/msg':>7} {variant + ' msgs':>13} "
              f"{'us/msg':>7} {'ratio':>6}")
        for w in range(windows):
            time.sleep(seconds)
            after = [plain.sample(client), other.sample(client)]
            (pm, pc), (om, oc) = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before,
                                                                               strict=True)]
            before = after
            if min(pm, om) == 0 or max(a[0] for a in after) >= n:
                raise SystemExit(f"window {w + 1}: a stream ran dry; raise --n")
            ratio = (oc / om) / (pc / pm)
            ratios.append(ratio)
            print(f"{w + 1:>6} {pm:>11,} {pc / pm / 1000:>7.2f} {om:>13,} "
                  f"{oc / om / 1000:>7.2f} {ratio:>6.3f}", flush=True)
        if variant == "signed" and client.xlen(HandlerKeys(other.stream, GROUP).dlq):
            raise SystemExit("signed: messages were dead-lettered: the wrong path was counted")
    finally:
        stop(client, plain)
        stop(client, other)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300_000, help="messages in each stream")
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of a window")
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
        print(f"\n{variant} beside plain, both on CPU {args.cpu}")
        ratios = compare(client, args.redis_url, variant, args.n, args.windows, args.seconds,
                         args.cpu)
        summary.append((variant, ratios))
    print(f"\nCPU per message over the plain pool's, {args.windows} windows of "
          f"{args.seconds:g} s, both pools at once on one core")
    print(f"{'run':<10} {'median':>7} {'min':>7} {'max':>7}")
    for variant, ratios in summary:
        print(f"{variant:<10} {statistics.median(ratios):>7.3f} {min(ratios):>7.3f} "
              f"{max(ratios):>7.3f}")


if __name__ == "__main__":
    main()
