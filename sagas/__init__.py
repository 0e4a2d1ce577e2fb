"""Choreographed sagas on top of ``workers`` and ``queues`` (steps that react to events,
emit events, and compensate in reverse order on failure)."""

__all__: list[str] = []
