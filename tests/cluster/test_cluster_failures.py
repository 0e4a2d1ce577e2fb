"""Retry and dead letter on a Redis Cluster: the in-process failure tests written for one
Redis, run unchanged on the local cluster. Every script their pool sends is checked to
touch one slot (conftest's guard), and the cluster itself refuses any that does not
(CROSSSLOT)."""

from e2e.test_failures import (
    lab_pool,
    test_a_handler_that_always_fails_is_tried_stop_times_then_dead_lettered_once,
    test_messages_that_can_never_succeed_are_dead_lettered_at_once,
)

__all__ = ["lab_pool",
           "test_a_handler_that_always_fails_is_tried_stop_times_then_dead_lettered_once",
           "test_messages_that_can_never_succeed_are_dead_lettered_at_once"]
