"""Durable delayed retries: a failed message waits in a zset, never in a sleeping task.

A retry is parked in the handler's delayed zset (``seawall:{stream}:delayed:<handler>``,
score = due time in ms) by :func:`schedule_retry`, which acks the failed entry in the same
Lua script: the message is always in exactly one place, pending or parked. A mover calls
:func:`move_due` now and then; it moves due retries to the handler's own retry stream,
where the handler's consumer group reads them like any other entry. A process that dies
between the two loses nothing: the zset is in Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from queues.envelope import ATTEMPT, FIRST_FAILED_AT, ORIGIN_ENTRY_ID
from queues.scripts import LuaScript

_RETRY_LATER = LuaScript("retry_later")
_MOVE_DUE = LuaScript("move_due")

#: A stream entry's fields as any caller holds them: ``Envelope.fields`` (bytes -> bytes),
#: ``envelope.encode()`` output (str -> str | bytes), or a mix. (Mapping keys are invariant,
#: hence the union.)
Fields = (
    Mapping[bytes, bytes | str] | Mapping[str, bytes | str] | Mapping[bytes | str, bytes | str]
)


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def flatten(fields: Fields) -> list[bytes]:
    """``{name: value}`` as ``[name, value, ...]`` for a script's ARGV (names unique as bytes)."""
    merged: dict[bytes, bytes] = {}
    for name, value in fields.items():
        merged[_b(name)] = _b(value)
    return [part for pair in merged.items() for part in pair]


def retry_fields(
    envelope_fields: Fields,
    *,
    attempt: int,
    first_failed_at_ms: int,
    origin_entry_id: str,
) -> dict[bytes, bytes]:
    """The fields of the next delivery: every field kept, ``attempt`` set to the next
    attempt's number, ``first_failed_at`` (ms) and ``origin_entry_id`` (the entry id on the
    user's stream) set, so the policy and the dead letter see the whole history."""
    out = {_b(k): _b(v) for k, v in envelope_fields.items()}
    out[ATTEMPT] = str(attempt).encode()
    out[FIRST_FAILED_AT] = str(first_failed_at_ms).encode()
    out[ORIGIN_ENTRY_ID] = origin_entry_id.encode()
    return out


async def schedule_retry(
    client_or_pipe: aioredis.Redis,
    *,
    source_stream: str,
    group: str,
    entry_id: str,
    delayed_key: str,
    due_ms: int,
    fields: Fields,
    drop_source: bool = False,
) -> bool:
    """XACK ``entry_id`` on ``source_stream`` and park ``fields`` in ``delayed_key`` until
    ``due_ms``, in one script. False if the entry was already acked (nothing is added, so
    a message is never scheduled twice).

    ``drop_source`` also XDELs the entry: pass it when the source is the handler's own retry
    stream, which nobody else reads, so that stream does not grow forever.

    On a pipeline (``redis.asyncio`` pipelines are clients too) the script is only queued
    and this returns True; the script's own answer, 1 or 0, is in ``execute()``'s reply.
    """
    args: list[Any] = [group, entry_id, int(due_ms), "1" if drop_source else "0"]
    args.extend(flatten(fields))
    reply = await _RETRY_LATER(client_or_pipe, [source_stream, delayed_key], args)
    if isinstance(reply, Pipeline):
        return True
    return bool(reply)


async def move_due(
    client: aioredis.Redis,
    *,
    delayed_key: str,
    retry_stream: str,
    now_ms: int,
    limit: int = 100,
) -> tuple[int, int | None]:
    """Move up to ``limit`` retries due at ``now_ms`` to ``retry_stream``, atomically.

    Returns how many moved and the due time (ms) of the earliest one still waiting, or None
    when none is left: a mover sleeps until then (or its polling interval, if shorter), and
    calls again at once when it moved ``limit`` (more may be due).
    """
    if limit < 1:
        raise ValueError("limit must be >= 1")
    moved, next_due = await _MOVE_DUE(client, [delayed_key, retry_stream], [int(now_ms), limit])
    nxt = int(float(next_due))
    return int(moved), (None if nxt < 0 else nxt)


__all__ = ["flatten", "move_due", "retry_fields", "schedule_retry"]
