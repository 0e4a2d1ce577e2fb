"""How much work a handler has before it, as ``seawall status`` shows it: its consumer
group's lag and pending entries on the user's stream and on its retry stream, its delayed
retries and its dead letters. Read-only figures; nothing here changes a key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from queues.keys import HandlerKeys


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One consumer group on one stream (XINFO GROUPS)."""

    lag: int | None
    """Entries not yet delivered to the group; ``None`` when Redis cannot tell (it lost
    track after entries were deleted from the stream)."""
    pending: int
    """Delivered to a consumer and not yet acked."""
    consumers: int


@dataclass(frozen=True, slots=True)
class HandlerBacklog:
    group: GroupFigures | None
    """The handler's group on the user's stream; ``None`` before its first consumer ran."""
    retry_pending: int
    """Redeliveries on the handler's retry stream: not yet read, or read and not acked."""
    delayed: int
    """Retries waiting for their time."""
    dead_letters: int


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _figures(info: Mapping[Any, Any]) -> GroupFigures:
    lag = info.get("lag")
    return GroupFigures(lag=None if lag is None else int(lag),
                        pending=int(info.get("pending") or 0),
                        consumers=int(info.get("consumers") or 0))


def group_figures_sync(client: redis.Redis, stream: str, group: str) -> GroupFigures | None:
    """``group``'s figures on ``stream``; ``None`` when the stream or the group is not there."""
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such key
        return None
    for info in groups:
        if _s(info.get("name")) == group:
            return _figures(info)
    return None


def handler_backlog_sync(client: redis.Redis, keys: HandlerKeys) -> HandlerBacklog:
    main = group_figures_sync(client, keys.stream, keys.group)
    retry = group_figures_sync(client, keys.retry, keys.group)
    with client.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.delayed)
        pipe.xlen(keys.dlq)
        delayed, dead = pipe.execute()
    retry_pending = 0 if retry is None else retry.pending + (retry.lag or 0)
    return HandlerBacklog(group=main, retry_pending=retry_pending, delayed=int(delayed),
                          dead_letters=int(dead))


def _ms_of(entry_id: Any) -> int:
    return int(_s(entry_id).partition("-")[0])


def oldest_pending_ms_sync(client: redis.Redis, stream: str, group: str) -> int | None:
    """When the oldest entry ``group`` has pending on ``stream`` was added to the stream
    (ms, from its id); ``None`` when nothing is pending (or there is no such group)."""
    try:
        summary: Any = client.xpending(stream, group)
    except redis.ResponseError:  # no such key or group
        return None
    if not summary or not int(summary.get("pending") or 0) or summary.get("min") is None:
        return None
    return _ms_of(summary["min"])
