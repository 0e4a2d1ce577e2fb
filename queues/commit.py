"""Acks that carry something: a completion marker, follow-up events. One ``commit.lua`` call
per (stream, group) and flush applies all of a batch's, atomically per message: a follow-up
becomes visible exactly when its cause's ack lands, never before and never without it.

Follow-ups whose target shares the source stream's hash slot are XADDed by the script
itself; the others go to the source's outbox (``queues.outbox``) in the same script and are
relayed right after, because one script may only touch one slot (Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.crc import key_slot

from queues.outbox import Relay
from queues.scripts import LuaScript

_COMMIT = LuaScript("commit", libraries=("fields_lib",))
_SLOTS: dict[str, int] = {}


def slot_of(key: str) -> int:
    """The key's Redis Cluster hash slot (remembered: streams are few)."""
    slot = _SLOTS.get(key)
    if slot is None:
        slot = key_slot(key.encode())
        if len(_SLOTS) < 10_000:
            _SLOTS[key] = slot
    return slot


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def pack_fields(fields: Mapping[str, str | bytes] | Mapping[bytes, bytes]) -> bytes:
    """A stream entry's fields as one argument, ``<len>:<bytes>`` for each name and value
    in turn, which ``commit.lua`` and ``relay.lua`` unpack: one argument per follow-up
    instead of two per field is what keeps committing follow-ups cheap for the client."""
    return b"".join(b"%d:%b%d:%b" % (len(n), n, len(v), v)
                    for n, v in ((_b(name), _b(value)) for name, value in fields.items()))


@dataclass(frozen=True, slots=True)
class Pending:
    """One message to ack, with what its ack commits."""

    entry_id: str
    marker: str | None = None
    """Its completion marker key (idempotent handlers), or None."""
    follow_ups: Sequence[tuple[str, Mapping[str, str | bytes]]] = ()
    """(target stream, fields) of each follow-up, in the order they were published."""


@dataclass(slots=True)
class CommitCall:
    """One queued ``commit.lua`` call: reads its own reply."""

    outbox: str
    items: list[Pending]
    _outboxed: list[list[tuple[str, bytes]]] = field(default_factory=list)
    """Per message: (target, packed fields) of each follow-up that went to the outbox."""

    def read(self, reply: Sequence[Any]) -> tuple[int, list[Relay]]:
        """How many messages this call acked, and the relays their follow-ups need."""
        outbox = self.outbox
        acked = 0
        relays: list[Relay] = []
        at = 0
        for outboxed in self._outboxed:
            was_acked = int(reply[at]) == 1
            at += 1
            if not was_acked:
                continue
            acked += 1
            for target, packed in outboxed:
                raw = reply[at]
                at += 1
                outbox_id = raw.decode() if isinstance(raw, bytes) else str(raw)
                relays.append(Relay(outbox, outbox_id, target, packed))
        return acked, relays


def queue_commit(pipe: Any, *, source: str, outbox: str, group: str, items: list[Pending],
                 drop_source: bool = False, marker_ttl: int = 1) -> CommitCall:
    """Add one ``commit.lua`` call for ``items`` (all read from ``source`` by ``group``) to
    ``pipe``; ``outbox`` is the outbox of the user's stream (``keys.outbox``), in the same
    slot as ``source`` whether that is the user's stream or a handler's retry stream. The
    returned object reads its reply from ``execute()``."""
    if marker_ttl < 1:
        raise ValueError("marker_ttl must be >= 1 second")
    if slot_of(outbox) != slot_of(source):
        raise ValueError(f"outbox {outbox!r} is not in the slot of {source!r}")
    call = CommitCall(outbox, items)
    key_list: list[str] = [source, outbox]
    index: dict[str, int] = {}
    source_slot = slot_of(source)

    def key_index(key: str) -> int:
        at = index.get(key)
        if at is None:
            key_list.append(key)
            at = index[key] = len(key_list)
        return at

    args: list[Any] = [group, "1" if drop_source else "0", marker_ttl, len(items)]
    for item in items:
        args.append(item.entry_id)
        args.append(key_index(item.marker) if item.marker is not None else 0)
        args.append(len(item.follow_ups))
        outboxed: list[tuple[str, bytes]] = []
        for target, fields in item.follow_ups:
            packed = pack_fields(fields)
            if slot_of(target) == source_slot:
                args += [key_index(target), target, packed]
            else:
                outboxed.append((target, packed))
                args += [0, target, packed]
        call._outboxed.append(outboxed)
    _COMMIT.queue(pipe, key_list, args)
    return call


async def commit(client: Any, *, source: str, outbox: str, group: str, items: list[Pending],
                 drop_source: bool = False, marker_ttl: int = 1) -> tuple[int, list[Relay]]:
    """:func:`queue_commit` sent on its own (tests, tools): acked count and relays."""
    await client.script_load(_COMMIT.source)
    async with client.pipeline(transaction=False) as pipe:
        call = queue_commit(pipe, source=source, outbox=outbox, group=group, items=items,
                            drop_source=drop_source, marker_ttl=marker_ttl)
        [reply] = await pipe.execute()
    return call.read(reply)


__all__ = ["CommitCall", "Pending", "commit", "pack_fields", "queue_commit", "slot_of"]
