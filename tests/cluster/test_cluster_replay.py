"""Replaying dead letters on a Redis Cluster (the replay script moves them to the handler's
retry stream, in the stream's slot): the replay tests written for one Redis, unchanged."""

from e2e.test_replay import (
    lab_pool,
    test_a_replay_after_the_fix_hands_every_message_to_that_handler_once,
)

__all__ = ["lab_pool", "test_a_replay_after_the_fix_hands_every_message_to_that_handler_once"]
