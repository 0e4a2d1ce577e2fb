"""Follow-ups bound for a stream in another hash slot: committed into the source stream's
outbox (``seawall:{orders}:outbox``) by the ack's own script, then relayed.

A Lua script may only touch keys of one slot (Redis Cluster), and a follow-up's target is
usually in another slot than the stream its cause was read from. So the ack script writes
such a follow-up into the outbox, in the source's slot, atomically with the XACK; right
after, the process that acked relays it: XADD to the target, then XDEL from the outbox.
A process that dies between the two leaves the entry in the outbox, and a sweeper (any
process reading that stream) relays entries older than :data:`RELAY_GRACE_MS`. A relay
repeated after a crash writes the same follow-up again under the same message id, which an
``idempotent=True`` handler downstream skips: at least once, never lost.

An outbox entry has two fields: :data:`TARGET`, the stream to relay it to, and
:data:`FIELDS`, the follow-up's own fields packed into one value (``queues.commit
.pack_fields``), which ``relay.lua`` unpacks into the XADD.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from queues import keys
from queues.scripts import LuaScript

TARGET = b"seawall:target"
"""Field of an outbox entry: the stream the follow-up is bound for."""
FIELDS = b"seawall:fields"
"""Field of an outbox entry: the follow-up's fields, packed."""
_RELAY = LuaScript("relay", libraries=("fields_lib",))
RELAY_GRACE_MS = 5000
"""A sweeper relays an outbox entry only once it is this old: the process that committed
it relays it within milliseconds unless it died (or Redis went away) meanwhile."""
SWEEP_LEASE_MS = 2000
"""One sweep of an outbox per this long across the fleet, so sweepers do not race."""


@dataclass(frozen=True, slots=True)
class Relay:
    """One committed follow-up waiting in an outbox."""

    outbox: str
    outbox_id: str
    target: str
    packed: bytes
    """The follow-up's own fields, packed (``queues.commit.pack_fields``)."""


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def queue_relays(pipe: Any, relays: Sequence[Relay]) -> None:
    """Add the writes of ``relays`` to their targets (one ``relay.lua`` call per target),
    then one XDEL per outbox, to ``pipe``: an outbox entry goes only after (in the same
    pipeline as) the write it stood for. The script is sent with its text (EVAL), which
    cannot fail for want of a loaded script: an XDEL must never outlive its write."""
    by_target: dict[str, list[bytes]] = {}
    by_outbox: dict[str, list[str]] = {}
    for relay in relays:
        by_target.setdefault(relay.target, []).append(relay.packed)
        by_outbox.setdefault(relay.outbox, []).append(relay.outbox_id)
    for target, packed in by_target.items():
        _RELAY.queue_with_source(pipe, [target], packed)
    for outbox, ids in by_outbox.items():
        pipe.xdel(outbox, *ids)


def relays_from_entries(outbox: str, entries: Sequence[tuple[Any, Mapping[bytes, bytes]]]
                        ) -> tuple[list[Relay], list[str]]:
    """Outbox entries (XRANGE rows) as relays; also the ids of malformed entries (no
    target or no fields), which can only be deleted."""
    relays: list[Relay] = []
    broken: list[str] = []
    for entry_id, fields in entries:
        target, packed = fields.get(TARGET), fields.get(FIELDS)
        if not target or packed is None:
            broken.append(_s(entry_id))
            continue
        relays.append(Relay(outbox, _s(entry_id), _s(target), packed))
    return relays, broken


async def sweep(client: Any, stream: str, *, now_ms: int, count: int = 100) -> int:
    """Relay what was committed into ``stream``'s outbox at least :data:`RELAY_GRACE_MS`
    ago and never relayed (its process died first). At most one sweeper per outbox at a
    time (a short lease); returns how many entries were relayed."""
    outbox = keys.outbox(stream)
    if not await client.set(keys.outbox_sweep_lease(stream), b"1", nx=True,
                            px=SWEEP_LEASE_MS):
        return 0
    rows = await client.xrange(outbox, min="-", max=str(now_ms - RELAY_GRACE_MS), count=count)
    if not rows:
        return 0
    relays, broken = relays_from_entries(outbox, rows)
    async with client.pipeline(transaction=False) as pipe:
        queue_relays(pipe, relays)
        if broken:
            pipe.xdel(outbox, *broken)
        await pipe.execute()
    return len(relays)


async def backlog(client: Any, stream: str) -> int:
    """Follow-ups committed from ``stream`` and not relayed yet."""
    return int(await client.xlen(keys.outbox(stream)))


__all__ = ["FIELDS", "RELAY_GRACE_MS", "TARGET", "Relay", "backlog", "queue_relays",
           "relays_from_entries", "sweep"]
