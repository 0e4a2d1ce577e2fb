"""bench/throughput.py's metrics run works on a tiny input: the pool under `seawall run
--metrics-port`, scraped while it drains, its scrape checked to count every message, and
its msgs/s compared with the plain run's. Nothing is timed here (CONVENTIONS 13)."""

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


def test_throughput_metrics_run_prints_its_row_and_its_ratio() -> None:
    env = dict(os.environ, SEAWALL_REDIS_URL=REDIS_URL)
    done = subprocess.run([sys.executable, "bench/throughput.py", "--runs", "metrics", "--n",
                           "300", "--rounds", "1", "--redis-url", REDIS_URL], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^seawall, metrics on\s+300\s", done.stdout, re.M), done.stdout
    assert re.search(r"^seawall, metrics on: \d+\.\d\d of the seawall run's msgs/s",
                     done.stdout, re.M), done.stdout
