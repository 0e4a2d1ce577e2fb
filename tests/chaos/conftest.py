"""The chaos suite's scenario runs and its table.

When ``test_scenarios.py`` is among the tests collected, every scenario is started at once,
as soon as collection ends, each in a thread of its own with its own redis-server, proxy,
witness and supervisors (the machine waits on faults more than it computes), so that the
directory's other tests run meanwhile. They run in a bounded form: durations scaled by
``SEAWALL_CHAOS_SCALE`` (0.2 unless set). Each scenario test waits for its own run. When
the session ends, the table of every scenario that ran is written to the terminal, so
that it shows in CI's log without ``pytest -s``.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from chaos.scenarios import SCENARIOS
from chaos.world import Row, table

os.environ.setdefault("SEAWALL_CHAOS_SCALE", "0.2")
ROWS: list[Row] = []
RUNS: dict[str, Future[Row]] = {}
_executor: list[ThreadPoolExecutor] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    if not any(item.nodeid.startswith("tests/chaos/test_scenarios.py")
               or "chaos/test_scenarios.py" in item.nodeid for item in session.items):
        return
    base = session.config._tmp_path_factory.mktemp("chaos")  # type: ignore[attr-defined]
    executor = ThreadPoolExecutor(len(SCENARIOS), thread_name_prefix="chaos")
    _executor.append(executor)
    RUNS.update({name: executor.submit(run, base / name) for name, run in SCENARIOS.items()})


def pytest_sessionfinish(session: pytest.Session) -> None:
    for executor in _executor:
        executor.shutdown(wait=True, cancel_futures=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    terminalreporter.section("chaos: where every message ended up")
    for line in table(sorted(ROWS, key=lambda r: r.scenario)).splitlines():
        terminalreporter.write_line(line)
    for row in ROWS:
        for note in row.notes:
            terminalreporter.write_line(f"{row.scenario}: {note.splitlines()[0]}")
