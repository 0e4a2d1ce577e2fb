"""Delivery and crash recovery on a Redis Cluster: the end-to-end tests written for one
Redis, run unchanged against the local cluster (``seawall run`` pools given its URL)."""

from e2e.test_crash_recovery import test_a_killed_pool_process_is_restarted_and_loses_nothing
from e2e.test_delivery import test_every_message_is_handled_once_by_each_handler

__all__ = ["test_a_killed_pool_process_is_restarted_and_loses_nothing",
           "test_every_message_is_handled_once_by_each_handler"]
