"""Follow-ups bound for a stream in another hash slot: committed into the source stream's
outbox (``seawall:{orders}:outbox``) by the ack's own script, then relayed.

A Lua script may only touch keys of one slot (Redis Cluster), and a follow-up's target is
usually in another slot than the stream its cause was read from. So the ack script writes
such a follow-up into the outbox, in the source's slot, atomically with the XACK; right
after, the process that acked relays it: XADD to the target, then, once Redis has said
the XADD was done, XDEL from the outbox (with the next pipeline). A write Redis refuses
(the target holds another type of key, Redis is out of memory) leaves the entry in the
outbox. A process that dies between the two leaves the entry in the outbox too, and a
sweeper (any process reading that stream) relays entries older than
:data:`RELAY_GRACE_MS`. A relay repeated after a crash writes the same follow-up again
under the same message id, which an ``idempotent=True`` handler downstream skips: at
least once, never lost.

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


@dataclass(frozen=True, slots=True)
class RelayCall:
    """The relay scripts queued on a pipeline: where each one's reply will be, and the
    relays it carries."""

    calls: tuple[tuple[int, tuple[Relay, ...]], ...]

    def written(self, results: Sequence[Any]) -> tuple[list[Relay], list[Refused]]:
        """From the pipeline's replies: the relays Redis wrote to their targets (their
        outbox entries may go), and those it refused, with why (they stay in the
        outbox)."""
        written: list[Relay] = []
        refused: list[Refused] = []
        for position, relays in self.calls:
            reply = results[position]
            if isinstance(reply, Exception):
                refused.extend((relay, reply) for relay in relays)
            else:
                written.extend(relays)
        return written, refused


Refused = tuple[Relay, Exception]
"""A relay whose write Redis refused, and Redis's error."""


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep of an outbox did."""

    relayed: int
    refused: tuple[Refused, ...] = ()


def queue_relays(pipe: Any, relays: Sequence[Relay]) -> RelayCall:
    """Add the writes of ``relays`` to their targets to ``pipe``, one ``relay.lua`` call
    per target (sent with its text, EVAL, which cannot fail for want of a loaded script).
    Their outbox entries are not deleted here: only once the reply says they were written
    (:meth:`RelayCall.written`, then :func:`queue_deletes`)."""
    by_target: dict[str, list[Relay]] = {}
    for relay in relays:
        by_target.setdefault(relay.target, []).append(relay)
    calls = []
    for target, group in by_target.items():
        calls.append((len(pipe), tuple(group)))
        _RELAY.queue_with_source(pipe, [target], [relay.packed for relay in group])
    return RelayCall(tuple(calls))


def queue_deletes(pipe: Any, relays: Sequence[Relay]) -> None:
    """Add the XDELs of written relays' outbox entries to ``pipe``, one per outbox."""
    by_outbox: dict[str, list[str]] = {}
    for relay in relays:
        by_outbox.setdefault(relay.outbox, []).append(relay.outbox_id)
    for outbox, ids in by_outbox.items():
        pipe.xdel(outbox, *ids)


async def relay(client: Any, relays: Sequence[Relay]) -> tuple[list[Relay], list[Refused]]:
    """Write ``relays`` to their targets, then delete from their outboxes those Redis
    wrote (two round trips); returns those, and the ones Redis refused."""
    if not relays:
        return [], []
    async with client.pipeline(transaction=False) as pipe:
        call = queue_relays(pipe, relays)
        written, refused = call.written(await pipe.execute(raise_on_error=False))
    if written:
        async with client.pipeline(transaction=False) as pipe:
            queue_deletes(pipe, written)
            await pipe.execute()
    return written, refused


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


async def sweep(client: Any, stream: str, *, now_ms: int, count: int = 100) -> Swept:
    """Relay what was committed into ``stream``'s outbox at least :data:`RELAY_GRACE_MS`
    ago and never relayed (its process died first, or Redis refused the write). At most
    one sweeper per outbox at a time (a short lease); says how many entries were
    relayed, and which writes Redis refused (those stay)."""
    outbox = keys.outbox(stream)
    if not await client.set(keys.outbox_sweep_lease(stream), b"1", nx=True,
                            px=SWEEP_LEASE_MS):
        return Swept(0)
    rows = await client.xrange(outbox, min="-", max=str(now_ms - RELAY_GRACE_MS), count=count)
    if not rows:
        return Swept(0)
    relays, broken = relays_from_entries(outbox, rows)
    if broken:
        await client.xdel(outbox, *broken)
    written, refused = await relay(client, relays)
    return Swept(len(written), tuple(refused))


async def backlog(client: Any, stream: str) -> int:
    """Follow-ups committed from ``stream`` and not relayed yet."""
    return int(await client.xlen(keys.outbox(stream)))


__all__ = ["FIELDS", "RELAY_GRACE_MS", "TARGET", "Refused", "Relay", "RelayCall", "Swept",
           "backlog", "queue_deletes", "queue_relays", "relay", "relays_from_entries",
           "sweep"]
