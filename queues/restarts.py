"""Pool restarts, counted in Redis (``seawall:restarts``): pool name -> how many times the
supervisor restarted one of its processes after it died. The supervisor adds one per death
it restarts from; the demo reads the totals (the difference between its start and end)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from queues.keys import RESTARTS


def count_restart_sync(client: redis.Redis, pool: str) -> int:
    """One more restart of ``pool``; returns its new total."""
    return int(client.hincrby(RESTARTS, pool, 1))


def _parse(raw: Mapping[Any, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pool, value in raw.items():
        try:
            out[pool.decode("utf-8", "replace") if isinstance(pool, bytes) else str(pool)] = (
                int(value))
        except ValueError:
            continue
    return out


def read_restarts_sync(client: redis.Redis) -> dict[str, int]:
    """Restarts by pool name (pools never restarted are absent)."""
    return _parse(client.hgetall(RESTARTS))
