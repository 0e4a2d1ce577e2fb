"""Given the chaos app under a steady load, when each scenario's faults hit it (pool
processes SIGKILLed, Redis restarted, partitions, half-open connections, partitions during
a replay, a breaker probe and compensations, a clock 30 s ahead), then every message and
saga is accounted for once the faults heal: handled, or (where the scenario makes them)
dead-lettered, and none lost."""

from __future__ import annotations

import pytest

from chaos.conftest import ROWS, RUNS
from chaos.scenarios import SCENARIOS

pytestmark = pytest.mark.slow

RUN_WITHIN = 280.0
"""(under the suite's per-test timeout)"""


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_message_accounted_for(name: str) -> None:
    row = RUNS[name].result(RUN_WITHIN)
    ROWS.append(row)
    assert row.messages > 0, "the producer published nothing"
    assert row.lost == 0, "\n".join(row.notes)
    assert row.waiting == 0, "\n".join(row.notes)
    assert row.dead == 0, "\n".join(row.notes)
    assert row.handled == row.messages, "\n".join(row.notes)
