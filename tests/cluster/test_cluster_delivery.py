"""Delivery and crash recovery on a Redis Cluster: the end-to-end test written for one
Redis, run unchanged against the local cluster (``seawall run`` pools given its URL): a
pool process SIGKILLed mid-batch is restarted and every message is handled, only those in
flight at the kill more than once, nothing left pending. (e2e/test_delivery.py's two
handlers on one stream run on the cluster too when imported here; it is left out of the
suite CI runs to keep it within its time.)"""

from e2e.test_crash_recovery import test_a_killed_pool_process_is_restarted_and_loses_nothing

__all__ = ["test_a_killed_pool_process_is_restarted_and_loses_nothing"]
