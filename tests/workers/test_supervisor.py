"""The supervisor's restart backoff (pure): 0.5 s after a pool process's first crash,
doubling with each consecutive crash, never more than 30 s, however long the crash loop
lasts; a process that ran ``STABLE_AFTER`` (30 s) before dying starts afresh.

(The reset itself is decided inline in ``Supervisor._loop``, not by a pure function; only
its threshold is pinned here.)"""

from __future__ import annotations

import pytest

from workers.runtime.supervisor import STABLE_AFTER, next_failures, restart_delay


@pytest.mark.parametrize(("failures", "delay"), [
    (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (7, 30.0), (8, 30.0),
])
def test_the_delay_doubles_per_consecutive_crash_up_to_30_s(failures: int,
                                                            delay: float) -> None:
    assert restart_delay(failures) == delay


def test_the_delays_never_shrink_while_the_crashes_go_on() -> None:
    delays = [restart_delay(n) for n in range(1, 200)]

    assert delays == sorted(delays)
    assert max(delays) == 30.0
    assert all(isinstance(d, float) for d in delays)


@pytest.mark.parametrize("failures", [100, 1024, 1025, 5000, 1_000_000])
def test_a_crash_loop_of_any_length_waits_30_s(failures: int) -> None:
    """At 30 s a crash, the 1025th consecutive crash comes after about 8.5 hours of a pool
    that cannot stay up: the supervisor must still compute its delay (and keep the other
    pools running), not fail."""
    assert restart_delay(failures) == 30.0


def test_a_process_that_ran_30_s_counts_as_stable() -> None:
    assert STABLE_AFTER == 30.0
    # After a reset the next crash is the first again.
    assert restart_delay(1) == 0.5


def test_a_process_that_ran_long_enough_starts_the_backoff_afresh() -> None:
    assert next_failures(5, STABLE_AFTER) == 1
    assert next_failures(5, STABLE_AFTER - 0.1) == 6
    assert next_failures(0, 0.0) == 1
