"""Completion markers of idempotent handlers (``HandlerKeys.done``): looked up for a whole
fetched batch, and written for a whole ack batch, one Lua call each.

A marker says "this handler completed this message id"; it lives ``idempotency_ttl``
seconds. It is written in the ack pipeline ahead of the XACK, by a command that cannot
fail for want of a loaded script, so an ack is never in Redis without its marker: a
process that dies before the pipeline goes out leaves the entry pending and the marker
unwritten, and the message runs again (at least once); one that dies after leaves both.
Markers of one handler share its stream's hash tag, so one call may touch many.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from queues.scripts import LuaScript

_LOOKUP = LuaScript("done_lookup")
_MARK = LuaScript("done_mark")


async def completed(client: Any, markers: Sequence[str]) -> list[bool]:
    """For each marker key, whether it exists (the message was completed)."""
    if not markers:
        return []
    reply = await _LOOKUP(client, list(markers), [])
    return [bool(int(found)) for found in reply]


def queue_mark_done(pipe: Any, markers: Sequence[str], ttl: int) -> None:
    """Add the SET NX EX of every marker to ``pipe`` as one script call. It is an EVAL with
    the script's text, not an EVALSHA: after a Redis restart an EVALSHA would fail with
    NOSCRIPT while the XACKs behind it in the pipeline went through, leaving acks without
    their markers."""
    if ttl < 1:
        raise ValueError("ttl must be >= 1 second")
    if markers:
        _MARK.queue_with_source(pipe, list(markers), [ttl])
