"""Outcome counts: the observer every pool runs, so that ``seawall status`` and the demo
know what became of the messages without reading a log.

Counted in plain Python per (handler, kind) on the pool's event loop, and added to Redis
(``queues.outcome_counts``, HINCRBY) about once a second and when the pool stops. Counts
that could not be sent are kept and sent with the next flush.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from queues import outcome_counts
from workers.middleware import Call
from workers.outcome import Outcome

FLUSH_SECONDS = 1.0


class OutcomeCounter:
    """An observer (``app.observe`` shape) counting settled outcomes per handler and kind."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def __call__(self, call: Call, outcome: Outcome) -> None:
        # (``_value_``: the member's plain str; hashing or ``.value`` of an enum member is
        # a Python-level call, and this runs for every message)
        self._counts[(call.handler, outcome.kind._value_)] += 1

    def take(self) -> Counter[tuple[str, str]]:
        """The counts since the last take."""
        counts, self._counts = self._counts, Counter()
        return counts

    def put_back(self, counts: Counter[tuple[str, str]]) -> None:
        self._counts.update(counts)

    async def flush(self, client: Any) -> None:
        counts = self.take()
        if not counts:
            return
        try:
            await outcome_counts.add(client, counts)
        except BaseException:
            self.put_back(counts)
            raise

    async def flush_forever(self, client: Any) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush(client)
