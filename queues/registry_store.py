"""The handler registry (``seawall:registry``) and the pool processes' heartbeats
(``seawall:processes``): two hashes that let operators' tools (``status``, ``dlq``,
``breaker``) see every handler and every live process without importing the app.

Both hold JSON per field. The registry's records are made by ``workers.registry`` (which
knows what a handler is); this module only stores and fetches the JSON, so ``queues`` stays
free of ``workers``. A heartbeat is a plain dict (app, pool, pid, host, slot, ``seen_at``
in ms, and the bulkhead's figures); one that is not valid JSON is skipped when read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from queues.keys import PROCESSES, REGISTRY


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _records(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_s(name): _s(value) for name, value in raw.items()}


# -- the registry ------------------------------------------------------------------------


async def write_handlers(client: aioredis.Redis, records: Mapping[str, str]) -> None:
    """Store handler name -> JSON record (nothing sent when ``records`` is empty)."""
    if records:
        mapping: dict[Any, Any] = dict(records)
        await client.hset(REGISTRY, mapping=mapping)


def read_handlers_sync(client: redis.Redis) -> dict[str, str]:
    """Every registered handler's JSON record, by handler name."""
    return _records(client.hgetall(REGISTRY))


async def read_handlers(client: aioredis.Redis) -> dict[str, str]:
    return _records(await client.hgetall(REGISTRY))


# -- heartbeats --------------------------------------------------------------------------


async def write_heartbeat(client: aioredis.Redis, consumer: str,
                          record: Mapping[str, Any]) -> None:
    """Say that the pool process named ``consumer`` is alive: ``record`` as JSON."""
    await client.hset(PROCESSES, consumer, json.dumps(dict(record)))


async def remove_heartbeat(client: aioredis.Redis, consumer: str) -> None:
    """The pool process named ``consumer`` stopped: drop its heartbeat."""
    await client.hdel(PROCESSES, consumer)


def _beats(raw: Mapping[Any, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for consumer, value in raw.items():
        try:
            beat = json.loads(value)
        except ValueError:
            continue
        if isinstance(beat, dict):
            out[_s(consumer)] = beat
    return out


def read_heartbeats_sync(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every heartbeat, by consumer name (those that are not a JSON object are skipped)."""
    return _beats(client.hgetall(PROCESSES))


async def read_heartbeats(client: aioredis.Redis) -> dict[str, dict[str, Any]]:
    return _beats(await client.hgetall(PROCESSES))
