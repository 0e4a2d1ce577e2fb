"""Choreographed sagas on top of ``workers`` and ``queues``: steps that react to events and
emit events, and, when one fails for good, compensations that undo the committed steps in
the reverse of the order they committed. No coordinator: each step and compensation is an
ordinary handler, and the ledger in Redis changes with their acks."""

from sagas.models import SagaOutcome
from sagas.saga import Saga, Step

__all__ = ["Saga", "SagaOutcome", "Step"]
