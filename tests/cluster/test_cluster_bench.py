"""``bench/throughput.py --cluster`` runs on a tiny input against the local cluster and
prints its table and ratio (nothing timed: benchmarks are not tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.local_cluster import LocalCluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_cluster_throughput_run_prints_both_rows_and_the_ratio(cluster: LocalCluster
                                                                    ) -> None:
    done = subprocess.run([sys.executable, "bench/throughput.py", "--cluster", "--n", "600",
                           "--rounds", "1", "--redis-url", cluster.url], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("raw loop, 3 processes", "seawall, 3 pool processes"):
        assert re.search(rf"^{re.escape(name)}\s+600\s", done.stdout, re.M), done.stdout
    assert re.search(r"^cluster ratio: \d+\.\d+$", done.stdout, re.M), done.stdout
