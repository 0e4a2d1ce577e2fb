"""Instructions per message: a consumer process counted by valgrind's callgrind, which
counts the instructions executed, not seconds, so the figure does not move with what else
the machine is doing (on this shared machine, wall and CPU time per message vary by a
third from one run to the next; a cost of a few percent drowns in that).

    python bench/instructions.py [--n 4000] [--runs signed]

Each variant drains N and then 3N pre-published messages (bench/throughput.py's messages
and its no-op handler), each drain in a new process under callgrind; the difference of
the two totals over 2N is the cost of one message, start-up and shut-down cancelling
out. Variants: ``raw`` (bench/raw_consumer.py), ``seawall`` (one pool process of
bench/bench_app.py), and with ``--runs``: ``signed`` (every message signed and checked,
as ``bench/throughput.py --runs signed``) and ``unchecked`` (the same signed messages read
by a pool without keys: the cost of the signature field alone). The table ends with each
variant's count as a share of the seawall run's.

What it cannot show: time. An instruction of a dictionary lookup and one of SHA-256 are
counted alike, and callgrind runs the code on a simulated CPU without the SHA extensions,
so OpenSSL hashes with its vector code, not with the SHA instructions it uses natively.
Read it beside bench/throughput.py, not instead of it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import HERE, ROOT, _group, _publish, pool_command

sys.path.insert(0, str(ROOT))
from queues.keys import HandlerKeys


def _instructions(out: Path) -> int:
    for line in out.read_text().splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"{out}: no totals line")


def drain(client: redis.Redis, url: str, variant: str, n: int, timeout: float,
          keep: Path | None = None) -> int:
    """Instructions a new consumer process of ``variant`` executes to start, drain ``n``
    messages and stop (its callgrind file kept at ``keep``, if given)."""
    stream = f"bench-ins-{uuid.uuid4().hex[:8]}"
    _publish(client, stream, n, signed=variant in ("signed", "unchecked"))
    out = Path(tempfile.mkdtemp()) / "callgrind.out"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    if variant == "raw":
        group = "raw"
        proc = subprocess.Popen([*valgrind, sys.executable, str(HERE / "raw_consumer.py"),
                                 url, stream, group, str(n)], stderr=subprocess.DEVNULL)
    else:
        group = "bench.noop"
        argv, env = pool_command(url, stream, signed=variant == "signed")
        proc = subprocess.Popen([*valgrind, *argv], env=env, cwd=ROOT,
                                stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = _group(client, stream, group)
            if info and info["read"] >= n and info["lag"] == 0 and info["pending"] == 0:
                break
            if proc.poll() is not None and variant != "raw":
                raise RuntimeError(f"{variant}: the consumer exited with {proc.returncode}")
            time.sleep(0.2)
        else:
            raise TimeoutError(f"{variant}: {n} messages not drained in {timeout:.0f} s")
        if variant == "signed" and client.xlen(HandlerKeys(stream, "bench.noop").dlq):
            raise SystemExit("signed: messages were dead-lettered: the wrong path was counted")
        if proc.poll() is None:
            proc.terminate()  # a pool stops on SIGTERM; callgrind then writes its counts
        proc.wait(timeout)
        return _instructions(out)
    finally:
        if proc.poll() is None:
            proc.kill()
        client.delete(stream)
        for key in client.scan_iter(match=f"seawall:{{{stream}}}:*"):
            client.delete(key)
        if keep is None:
            shutil.rmtree(out.parent, ignore_errors=True)
        else:
            shutil.move(out, keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000,
                        help="messages of the shorter drain (the longer one drains 3N)")
    parser.add_argument("--runs", default="signed",
                        help="variants besides raw and seawall, comma separated: signed, "
                             "unchecked")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    extra = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(extra) - {"signed", "unchecked"}
    if unknown:
        parser.error(f"unknown runs: {', '.join(sorted(unknown))}")
    client = redis.Redis.from_url(args.redis_url)
    per_message: dict[str, float] = {}
    for variant in ["raw", "seawall", *extra]:
        short = drain(client, args.redis_url, variant, args.n, args.timeout)
        long = drain(client, args.redis_url, variant, 3 * args.n, args.timeout)
        per_message[variant] = (long - short) / (2 * args.n)
        print(f"{variant}: {short:,} instructions for {args.n} messages, {long:,} for "
              f"{3 * args.n}", flush=True)
    print(f"\ninstructions per message (callgrind; drains of {args.n} and {3 * args.n})")
    print(f"{'run':<12} {'per message':>12} {'of seawall':>11}")
    for variant, count in per_message.items():
        print(f"{variant:<12} {count:>12,.0f} {count / per_message['seawall']:>11.3f}")


if __name__ == "__main__":
    main()
