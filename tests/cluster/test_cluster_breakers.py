"""A breaker opening and closing on a Redis Cluster, fleet-wide (``seawall run`` pools),
with nothing lost: the breaker tests written for one Redis, unchanged."""

from e2e.test_breakers import (
    test_a_failing_dependency_opens_the_breaker_fleet_wide_and_nothing_is_lost,
)

__all__ = ["test_a_failing_dependency_opens_the_breaker_fleet_wide_and_nothing_is_lost"]
