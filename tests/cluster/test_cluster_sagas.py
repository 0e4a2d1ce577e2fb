"""A compensating saga on a Redis Cluster: the saga's own streams sit in its slot, the
events it sends to user streams in other slots go through its outbox; the saga flow tests
written for one Redis, unchanged."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sagas"))

from test_saga_flow import (
    checkout,
    lab_pool,
    test_a_last_step_publishing_outside_the_saga_in_its_slot_still_completes_it,
    test_a_step_failing_for_good_compensates_the_committed_ones_last_first,
)

__all__ = ["checkout", "lab_pool",
           "test_a_last_step_publishing_outside_the_saga_in_its_slot_still_completes_it",
           "test_a_step_failing_for_good_compensates_the_committed_ones_last_first"]
