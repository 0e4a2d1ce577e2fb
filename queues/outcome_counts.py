"""How every handler's messages were settled, counted in Redis (``seawall:outcomes``).

Pool processes count in plain Python, per handler and per kind of settled outcome, and add
their counts here about once a second (:func:`add`, one pipeline of HINCRBY). ``seawall
status`` and the demo read the totals (:func:`read_sync`); the demo takes the difference
between its start and its end. The totals only grow; they are figures for people, not a
ledger (a count added by a process that then died before its acks were confirmed may count
a message that is delivered again).

One hash field per (handler, kind): ``<handler>\\x1f<kind>`` -> integer. The separator is
the ASCII unit separator, which no handler name contains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from queues.keys import OUTCOMES

OK = "ok"
RETRY = "retry"
DEAD_LETTER = "dead_letter"
FALLBACK = "fallback"
PARKED = "parked"
SKIPPED = "skipped"
ABORTED = "aborted"
KINDS = (OK, RETRY, DEAD_LETTER, FALLBACK, PARKED, SKIPPED, ABORTED)
"""The kinds of settled outcome: acked after the handler returned, a retry scheduled, a
dead letter, acked after the breaker's fallback ran, parked while the breaker was open,
acked without running (already done: idempotency), a saga step that stopped its saga."""
SEPARATOR = "\x1f"


def field(handler: str, kind: str) -> str:
    """The hash field of one (handler, kind); ValueError for an unknown kind or a handler
    name that cannot be told apart from its kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown outcome kind {kind!r}; one of {', '.join(KINDS)}")
    if not handler or SEPARATOR in handler:
        raise ValueError(f"handler name {handler!r} must be non-empty and free of \\x1f")
    return f"{handler}{SEPARATOR}{kind}"


async def add(client: aioredis.Redis, deltas: Mapping[tuple[str, str], int]) -> None:
    """Add ``(handler, kind) -> n`` to the totals in one pipeline; nothing is sent when
    there is nothing to add (zeros are left out)."""
    increments = [(field(handler, kind), int(n)) for (handler, kind), n in deltas.items() if n]
    if not increments:
        return
    async with client.pipeline(transaction=False) as pipe:
        for name, n in increments:
            pipe.hincrby(OUTCOMES, name, n)
        await pipe.execute()


def parse(raw: Mapping[Any, Any]) -> dict[str, dict[str, int]]:
    """The hash (HGETALL reply) as handler -> kind -> count; fields not of the form
    ``<handler>\\x1f<kind>`` or not integers are skipped."""
    out: dict[str, dict[str, int]] = {}
    for raw_field, raw_value in raw.items():
        name = raw_field.decode("utf-8", "replace") if isinstance(raw_field, bytes) else raw_field
        handler, sep, kind = str(name).rpartition(SEPARATOR)
        if not sep or not handler or not kind:
            continue
        try:
            count = int(raw_value)
        except ValueError:
            continue
        out.setdefault(handler, {})[kind] = count
    return out


def read_sync(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Every handler's totals: handler -> kind -> count (kinds never counted are absent)."""
    return parse(client.hgetall(OUTCOMES))


async def read(client: aioredis.Redis) -> dict[str, dict[str, int]]:
    return parse(await client.hgetall(OUTCOMES))
