"""The benchmark scripts run on a tiny input and print their tables and ratio lines.

Nothing here is timed (CONVENTIONS 13: benchmarks are not tests); these only keep
bench/latency.py, bench/throughput.py's follow-up and tracing runs, bench/sagas.py and
bench/side_by_side.py working as the runtime changes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"\d+(?:\.\d+)?"


def run_script(*argv: str, timeout: float) -> str:
    env = dict(os.environ, SEAWALL_REDIS_URL=REDIS_URL)
    done = subprocess.run([sys.executable, *argv, "--redis-url", REDIS_URL], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_latency_prints_its_table_and_the_p99_ratio() -> None:
    out = run_script("bench/latency.py", "--rates", "200", "--seconds", "2", timeout=60)
    assert re.search(r"rate/s\s+consumer\s+messages\s+p50 ms\s+p99 ms\s+p99\.9 ms\s+max ms",
                     out), out
    for consumer in ("raw", "seawall"):
        row = rf"^\s*200\s+{consumer}\s+\d+(\s+{NUMBER}){{5}}\s*$"
        assert re.search(row, out, re.M), out
    assert re.search(rf"^p99 ratio at 200: {NUMBER}$", out, re.M), out


def test_throughput_followup_prints_both_ratios() -> None:
    out = run_script("bench/throughput.py", "--runs", "followup", "--n", "2000", "--rounds", "1",
                     timeout=60)
    for name in ("raw redis-py loop", "seawall", "raw loop, follow-up", "seawall, follow-up"):
        assert re.search(rf"^{re.escape(name)}\s+2000\s", out, re.M), out
    assert re.search(rf"^ratio: {NUMBER}$", out, re.M), out
    assert re.search(rf"^followup ratio: {NUMBER}$", out, re.M), out


def test_sagas_prints_its_table_and_the_ratio() -> None:
    out = run_script("bench/sagas.py", "--n", "100", "--rounds", "1", timeout=60)
    assert re.search(r"run\s+checkouts\s+seconds\s+checkouts/s\s+steps/s\s+CPU us/checkout",
                     out), out
    for name in ("plain chain (3 handlers)", "saga (3 steps)"):
        assert re.search(rf"^{re.escape(name)}\s+100\s", out, re.M), out
    assert re.search(rf"^ratio: {NUMBER}$", out, re.M), out


def test_throughput_tracing_prints_its_row_beside_the_plain_run() -> None:
    out = run_script("bench/throughput.py", "--runs", "tracing", "--n", "2000", "--rounds", "1",
                     timeout=60)
    assert re.search(r"^seawall, tracing 1%\s+2000\s", out, re.M), out
    assert re.search(rf"^seawall, tracing 1%: {NUMBER} of the seawall run's msgs/s", out,
                     re.M), out


def test_scale_prints_its_table() -> None:
    out = run_script("bench/scale.py", "--n", "200", "--max", "500", "--status-handlers", "3",
                     timeout=300)
    assert re.search(r"run\s+handlers\s+messages\s+seconds\s+msgs/s\s+CPU us/msg\s+cmds/msg"
                     r"\s+peak RSS MB", out), out
    for name, handlers, messages in (
            ("backlog 500", 1, 500), ("1 handlers, 200 msgs each", 1, 200),
            ("10 handlers, 20 msgs each", 10, 200), ("50 handlers, 4 msgs each", 50, 200),
            ("1 handlers on 1 stream, 200 entries", 1, 200),
            ("10 handlers on 1 stream, 20 entries", 10, 200),
            ("50 handlers on 1 stream, 4 entries", 50, 200),
            ("1 busy + 49 idle handlers", 50, 200), ("ok", 1, 200),
            ("dead letter (all invalid)", 1, 200), ("retry (all fail once)", 1, 200),
            ("idempotent", 1, 200), ("follow-up", 1, 200)):
        assert re.search(rf"^{re.escape(name)}\s+{handlers}\s+{messages}\s+{NUMBER}\s+\d+\s",
                         out, re.M), out
    for handlers in (1, 3):
        assert re.search(rf"^seawall status --json \(\d+ registered\)\s+{handlers}\s+0\s+{NUMBER}",
                         out, re.M), out


def test_peers_lists_the_settings_it_sweeps() -> None:
    """--list needs neither Redis nor the peers' virtualenv: every peer has settings, each
    named by the knobs it sets, in the same order."""
    done = subprocess.run([sys.executable, "bench/peers.py", "--list"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    blocks = dict(re.findall(r"^(\S+):\n((?:  .+\n)+)", done.stdout, re.M))
    assert set(blocks) == {"arq", "dramatiq", "taskiq", "faststream", "streaq", "celery"}
    for peer, knobs in (("arq", ("max_jobs",)),
                        ("dramatiq", ("processes", "threads", "prefetch", "actor")),
                        ("taskiq", ("workers", "max_async_tasks", "max_prefetch",
                                    "xread_count")),
                        ("faststream", ("workers", "max_workers", "max_records")),
                        ("streaq", ("concurrency", "prefetch")),
                        ("celery", ("pool", "concurrency", "prefetch_multiplier"))):
        lines = blocks[peer].splitlines()
        assert len(lines) >= 3, blocks[peer]
        for line in lines:
            assert [k for k, _ in re.findall(r"(\w+) (\w+)", line)] == list(knobs), line


def test_capacity_prints_its_table_and_model() -> None:
    out = run_script("bench/capacity.py", "--n", "300", timeout=180)
    assert re.search(r"path\s+procs\s+messages\s+msgs/s\s+pool us/msg\s+Redis us/msg\s+cmds/msg"
                     r"\s+net B/msg\s+Redis busy", out), out
    assert re.search(rf"^publish \(XADD, pipelines of 1000\)\s+0\s+300\s+-\s+-\s+{NUMBER}\s+",
                     out, re.M), out
    paths = ("ok (breaker=None)", "ok, breaker", "follow-up (to another slot)",
             "retry (all fail once)", "dead letter (all invalid)", "idempotent",
             "saga step (3-step saga)", "ok (breaker=None), 2 processes")
    for name in paths:
        procs = 2 if name.endswith("2 processes") else 1
        assert re.search(rf"^{re.escape(name)}\s+{procs}\s+\d+\s+\d+\s+{NUMBER}\s+{NUMBER}\s",
                         out, re.M), out
        # the model's row: measured msgs/s per process, msgs/s per process from its CPU,
        # Redis us/msg, msgs/s per shard, then processes and shards for 100k and 1M msgs/s
        assert re.search(rf"^{re.escape(name)}(\s+\d+){{2}}\s+{NUMBER}\s+\d+(\s+\d+){{4}}\s*$",
                         out, re.M), out


def test_side_by_side_prints_each_window_and_the_medians() -> None:
    out = run_script("bench/side_by_side.py", "--runs", "signed", "--n", "80000",
                     "--windows", "2", "--seconds", "0.3", "--pairs", "3", timeout=180)
    # three pairs, the orders taking turns, each pair with a hash seed of its own
    pairs = re.findall(r"^signed beside plain, both on CPU \d+, (plain|signed) first, "
                       r"PYTHONHASHSEED=(\d+)$", out, re.M)
    assert [order for order, _ in pairs] == ["plain", "signed", "plain"], out
    windows = re.findall(rf"^\s*[12]\s+[\d,]+\s+{NUMBER}\s+[\d,]+\s+{NUMBER}\s+{NUMBER}"
                         rf"\s+{NUMBER}\s*$", out, re.M)
    assert len(windows) == 6, out
    assert re.search(rf"^signed\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s*$", out, re.M), out
