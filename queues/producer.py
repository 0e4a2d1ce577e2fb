"""Publishing: one message, or many in one pipelined round trip."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis
import redis.asyncio as aioredis


def _fields(fields: Mapping[str, Any]) -> dict[Any, Any]:
    return dict(fields)


def _entry_id(raw: Any) -> str:
    return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)


async def apublish_fields(
    client: aioredis.Redis, stream: str, fields: Mapping[str, Any], *, maxlen: int | None = None
) -> str:
    raw = await client.xadd(stream, _fields(fields), maxlen=maxlen, approximate=True)
    return _entry_id(raw)


def publish_fields(
    client: redis.Redis, stream: str, fields: Mapping[str, Any], *, maxlen: int | None = None
) -> str:
    raw = client.xadd(stream, _fields(fields), maxlen=maxlen, approximate=True)
    return _entry_id(raw)


async def apublish_many(
    client: aioredis.Redis,
    stream: str,
    batch: Iterable[Mapping[str, Any]],
    *,
    maxlen: int | None = None,
) -> list[str]:
    """XADD every entry in one pipeline (not MULTI: entries are independent)."""
    async with client.pipeline(transaction=False) as pipe:
        for fields in batch:
            pipe.xadd(stream, _fields(fields), maxlen=maxlen, approximate=True)
        return [_entry_id(r) for r in await pipe.execute()]


def publish_many(
    client: redis.Redis,
    stream: str,
    batch: Iterable[Mapping[str, Any]],
    *,
    maxlen: int | None = None,
) -> list[str]:
    with client.pipeline(transaction=False) as pipe:
        for fields in batch:
            pipe.xadd(stream, _fields(fields), maxlen=maxlen, approximate=True)
        return [_entry_id(r) for r in pipe.execute()]
