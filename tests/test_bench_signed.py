"""bench/throughput.py's ``signed`` run works on a tiny input: every message is signed,
checked and handled (the script stops if any was dead-lettered), and its row and its
ratio to the plain run are printed. Nothing is timed (benchmarks are not tests)."""

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


def test_throughput_signed_prints_its_row_beside_the_plain_run() -> None:
    env = dict(os.environ, SEAWALL_REDIS_URL=REDIS_URL)
    done = subprocess.run(
        [sys.executable, "bench/throughput.py", "--runs", "signed", "--n", "2000",
         "--rounds", "1", "--redis-url", REDIS_URL],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"^seawall, signed\s+2000\s", out, re.M), out
    assert re.search(r"^seawall, signed: \d+(\.\d+)? of the seawall run's msgs/s", out,
                     re.M), out
