"""Consumer-group operations on the streams a handler reads.

A handler's consumers read two streams with one XREADGROUP: the user's stream and the
handler's retry stream, under one group named after the handler. Acks for a batch go in one
pipeline. Entries of a consumer that died are taken over with XAUTOCLAIM; entries a handler
is still working on are kept fresh with XCLAIM ... JUSTID, so nobody else takes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from queues.envelope import Envelope


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


async def ensure_group(client: aioredis.Redis, stream: str, group: str) -> bool:
    """Create ``group`` on ``stream`` from its first entry (MKSTREAM); True if it was new.

    A new group starts at ``0`` so messages published before the first worker started are
    handled, as a user of any job queue expects.
    """
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


def parse_read_reply(reply: Any) -> list[Envelope]:
    """XREADGROUP's reply as envelopes: RESP2 (a list) or RESP3 (a map), parsed by redis-py
    (fields as a dict) or raw (fields as a flat list, see :func:`read_raw`). An entry
    deleted from the stream while pending comes back with no fields (and then fails as
    having no payload)."""
    out: list[Envelope] = []
    items = reply.items() if isinstance(reply, dict) else (reply or [])
    for stream_raw, entries in items:
        if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], list) \
                and entries[0] and isinstance(entries[0][0], list | tuple):
            entries = entries[0]
        stream = _s(stream_raw)
        for entry_id, fields in entries:
            if fields is None:
                fields = {}
            elif not isinstance(fields, dict):
                pairs = iter(fields)  # name, value, name, value...: no slices copied
                fields = dict(zip(pairs, pairs, strict=False))
            out.append(Envelope(stream, _s(entry_id), fields))
    return out


def read_raw(client: aioredis.Redis) -> None:
    """Have ``client`` hand XREADGROUP replies over as Redis sent them: redis-py would turn
    every entry into a dict twice over (RESP3 to RESP2 shape, pairs to dict) before
    :func:`parse_read_reply` makes its own, a measurable share of a pool's CPU per message.
    For a worker pool's own client, whose reads all go through :func:`read_group`."""
    client.set_response_callback("XREADGROUP", _as_sent)


def _as_sent(response: Any, **options: Any) -> Any:
    return response


async def read_group(
    client: aioredis.Redis,
    group: str,
    consumer: str,
    streams: Sequence[str],
    *,
    count: int,
    block_ms: int | None,
) -> list[Envelope]:
    """One XREADGROUP of new entries (``>``) over ``streams``."""
    reply = await client.xreadgroup(
        group, consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms
    )
    return parse_read_reply(reply)


def queue_ack(pipe: Any, stream: str, group: str, ids: Sequence[str], *,
              delete: bool = False) -> None:
    """Add the XACK of ``ids`` (and their XDEL, for a stream only this group reads: a
    handler's retry stream) to ``pipe``; the caller executes it with its other commands."""
    if ids:
        pipe.xack(stream, group, *ids)
        if delete:
            pipe.xdel(stream, *ids)


async def keep_fresh(
    client: aioredis.Redis, group: str, consumer: str, by_stream: dict[str, list[str]]
) -> None:
    """Reset the idle time of entries still being handled (XCLAIM to ourselves, JUSTID,
    which does not count as a delivery), so XAUTOCLAIM elsewhere never takes them."""
    async with client.pipeline(transaction=False) as pipe:
        for stream, ids in by_stream.items():
            if ids:
                pipe.xclaim(stream, group, consumer, 0, list[Any](ids), justid=True)
        await pipe.execute()


async def claim(
    client: aioredis.Redis, stream: str, group: str, consumer: str, ids: Iterable[str]
) -> list[Envelope]:
    """Take over specific entries now, whatever their idle time (a dead consumer's, known
    to the supervisor)."""
    ids = list(ids)
    if not ids:
        return []
    reply: Any = await client.xclaim(stream, group, consumer, 0, list[Any](ids))
    return [Envelope(stream, _s(eid), fields) for eid, fields in reply if fields is not None]


@dataclass(frozen=True, slots=True)
class PendingEntry:
    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int


async def pending_of(
    client: aioredis.Redis,
    stream: str,
    group: str,
    *,
    consumer: str | None = None,
    min_idle_ms: int | None = None,
    count: int = 100,
    after: str | None = None,
) -> list[PendingEntry]:
    """Pending entries of ``group`` (of one ``consumer``), oldest first; with ``after``,
    only those with a greater id."""
    rows = await client.xpending_range(
        stream, group, min="-" if after is None else f"({after}", max="+", count=count,
        consumername=consumer, idle=min_idle_ms
    )
    return [
        PendingEntry(_s(r["message_id"]), _s(r["consumer"]), int(r["time_since_delivered"]),
                     int(r["times_delivered"]))
        for r in rows
    ]


async def autoclaim_ids(
    client: aioredis.Redis, stream: str, group: str, consumer: str, *, min_idle_ms: int,
    count: int,
) -> list[str]:
    """Take over entries idle longer than ``min_idle_ms`` without counting a delivery
    (JUSTID); the caller then decides, by delivery count, how to run each."""
    reply: Any = await client.xautoclaim(stream, group, consumer, min_idle_ms, "0-0",
                                         count=count, justid=True)
    # With JUSTID, redis-py returns the list of claimed ids itself.
    return [_s(i) for i in (reply or [])]


async def pending_entries(
    client: aioredis.Redis, stream: str, group: str, ids: Sequence[str]
) -> list[PendingEntry]:
    """XPENDING details (owner, idle time, deliveries) of specific entries, one pipeline."""
    async with client.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        rows = await pipe.execute()
    return [
        PendingEntry(entry_id, _s(r[0]["consumer"]), int(r[0]["time_since_delivered"]),
                     int(r[0]["times_delivered"]))
        for entry_id, r in zip(ids, rows, strict=True) if r
    ]


async def entry(client: aioredis.Redis, stream: str, entry_id: str) -> Envelope:
    """One entry by id, without claiming it (empty fields if it was deleted)."""
    rows: Any = await client.xrange(stream, min=entry_id, max=entry_id, count=1)
    return Envelope(stream, entry_id, rows[0][1] if rows else {})
