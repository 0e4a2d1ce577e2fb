"""Dead letters: each handler's stream of messages that failed for good.

A dead letter is the original entry's fields, every one kept, plus metadata fields whose
names start with ``dlq_`` (see :data:`METADATA_FIELDS`). Keeping the original fields is what
makes a replay exact; the prefix is what lets the replay strip the metadata again.

Every move is one Lua script: :func:`dead_letter` acks and appends (the message is never in
both places nor in neither), :func:`replay` moves dead letters to the handler's own retry
stream and deletes them (a replay killed half-way and run again neither loses nor doubles).
Reading (:func:`iter_dead_letters` and friends) pages through the stream with XRANGE /
XREVRANGE; the entry ids are the times the messages were dead-lettered, so a time range is
an id range, not a scan.

The scripts that add dead letters (``dead_letter.lua``, ``saga_fail.lua``,
``saga_undo_failed.lua``) and remove them (``replay.lua``, ``purge.lua``) also keep the
handler's counts by error type (``HandlerKeys.dlq_counts``, in the same slot, changed in
the same script), so :func:`stored_counts` answers without a scan.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from queues.delayed import Fields
from queues.envelope import ID, PAYLOAD
from queues.keys import dlq_counts_of
from queues.scripts import LuaScript

_DEAD_LETTER = LuaScript("dead_letter", libraries=("fields_lib",))
_REPLAY = LuaScript("replay", libraries=("fields_lib",))
_PURGE = LuaScript("purge", libraries=("fields_lib",))

#: Metadata field names; all start with this prefix, which no message field may use.
PREFIX = "dlq_"
HANDLER = "dlq_handler"
STREAM = "dlq_stream"
ENTRY_ID = "dlq_entry_id"
"""The message's entry id on the user's stream (its origin, across retries)."""
ATTEMPTS = "dlq_attempts"
ERROR_TYPE = "dlq_error_type"
ERROR = "dlq_error"
TRACEBACK = "dlq_traceback"
FIRST_FAILED_AT = "dlq_first_failed_at"
FAILED_AT = "dlq_failed_at"
CONSUMER = "dlq_consumer"
HOST = "dlq_host"
REASON = "dlq_reason"
METADATA_FIELDS = (
    HANDLER, STREAM, ENTRY_ID, ATTEMPTS, ERROR_TYPE, ERROR, TRACEBACK, FIRST_FAILED_AT,
    FAILED_AT, CONSUMER, HOST, REASON,
)

#: Tracebacks keep their last this many characters (the frame that raised is at the end).
TRACEBACK_LIMIT = 4000
#: Error messages keep their first this many characters.
ERROR_LIMIT = 1000
#: Ids per replay script call, and entries per XRANGE page: small, so Redis never stalls.
BATCH = 100

#: Entries per XRANGE page when only counting.
COUNT_PAGE = 1000

_ENTRY_ID = re.compile(r"^\d+(-\d+)?$")


def check_entry_id(entry_id: str) -> str:
    """``entry_id`` if it looks like a stream id (``1700000000000-0``), else ValueError."""
    if not _ENTRY_ID.match(entry_id):
        raise ValueError(f"{entry_id!r} is not a stream entry id (like 1700000000000-0)")
    return entry_id


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def _head(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dead_letter_fields(
    original_fields: Fields,
    *,
    handler: str,
    stream: str,
    origin_entry_id: str,
    attempts: int,
    error_type: str,
    error: str,
    traceback: str,
    first_failed_at_ms: int | None,
    failed_at_ms: int,
    consumer: str,
    host: str,
    reason: str,
) -> dict[bytes, bytes]:
    """The dead letter's fields: the original ones (any stale ``dlq_*`` dropped) plus the
    metadata. The traceback keeps its tail, the error message its head."""
    out: dict[bytes, bytes] = {}
    for name, value in original_fields.items():
        key = name if isinstance(name, bytes) else name.encode()
        if not key.startswith(PREFIX.encode()):
            out[key] = value if isinstance(value, bytes) else value.encode()
    meta = {
        HANDLER: handler,
        STREAM: stream,
        ENTRY_ID: origin_entry_id,
        ATTEMPTS: str(attempts),
        ERROR_TYPE: error_type,
        ERROR: _head(error, ERROR_LIMIT),
        TRACEBACK: _tail(traceback, TRACEBACK_LIMIT),
        FIRST_FAILED_AT: str(first_failed_at_ms if first_failed_at_ms is not None
                             else failed_at_ms),
        FAILED_AT: str(failed_at_ms),
        CONSUMER: consumer,
        HOST: host,
        REASON: reason,
    }
    out.update({k.encode(): v.encode("utf-8", "replace") for k, v in meta.items()})
    return out


_LENGTH = struct.Struct(">I").pack


@dataclass(frozen=True, slots=True)
class Pairs:
    """Name/value pairs packed for the scripts (``fields_lib.lua``'s binary packing),
    without the header: pieces that are put together into one packed argument."""

    count: int
    body: bytes

    def packed(self) -> bytes:
        """The pairs as one script argument."""
        return b"\0" + _LENGTH(self.count) + self.body


def _pairs(items: Iterable[tuple[bytes, bytes]]) -> Pairs:
    body = [_LENGTH(len(name)) + name + _LENGTH(len(value)) + value for name, value in items]
    return Pairs(len(body), b"".join(body))


def pack_pairs(fields: Fields) -> bytes:
    """``fields`` as one script argument, in ``fields_lib.lua``'s binary packing: a zero
    byte, the number of pairs (4 bytes, big-endian), then each name and value as a 4-byte
    length and its bytes (``unpacked`` splits it in one ``struct.unpack`` call)."""
    return _pairs((_b(k), _b(v)) for k, v in fields.items()).packed()


def pack_constant(*, handler: str, stream: str, consumer: str, host: str) -> Pairs:
    """The metadata every dead letter of one handler in one process shares, packed once."""
    return _pairs((k.encode(), v.encode("utf-8", "replace")) for k, v in (
        (HANDLER, handler), (STREAM, stream), (CONSUMER, consumer), (HOST, host)))


_PREFIX_B = PREFIX.encode()
_NAMES: dict[bytes, bytes] = {}
"""A message field's name -> its packed form (b"" for a stale ``dlq_*`` name, dropped):
the names of a stream's messages are few and the same from one message to the next."""
_NAMES_KEPT = 4096


def _packed_name(name: bytes) -> bytes:
    packed = b"" if name.startswith(_PREFIX_B) else _LENGTH(len(name)) + name
    if len(_NAMES) < _NAMES_KEPT:
        _NAMES[name] = packed
    return packed


def _name(name: str) -> bytes:
    return _LENGTH(len(name)) + name.encode()


_ENTRY_ID_B, _ATTEMPTS_B = _name(ENTRY_ID), _name(ATTEMPTS)
_FIRST_FAILED_AT_B, _FAILED_AT_B = _name(FIRST_FAILED_AT), _name(FAILED_AT)


def _own(original_fields: Mapping[bytes, bytes], origin_entry_id: str, attempts: int,
         first_failed_at_ms: int | None, failed_at_ms: int) -> Pairs:
    """A dead letter's fields of its own: the original ones (stale ``dlq_*`` dropped), the
    entry id of origin, attempts and times."""
    names = _NAMES
    parts: list[bytes] = []
    for name, value in original_fields.items():
        packed = names.get(name)
        if packed is None:
            packed = _packed_name(name)
        if packed:
            parts += (packed, _LENGTH(len(value)), value)
    meta = _meta(origin_entry_id, attempts, first_failed_at_ms, failed_at_ms)
    return Pairs(len(parts) // 3 + meta.count, b"".join(parts) + meta.body)


def _meta(origin_entry_id: str, attempts: int, first_failed_at_ms: int | None,
          failed_at_ms: int) -> Pairs:
    """The entry id of origin, attempts and times, as pairs."""
    origin = origin_entry_id.encode()
    tried = b"%d" % attempts
    failed = b"%d" % failed_at_ms
    first = failed if first_failed_at_ms is None else b"%d" % first_failed_at_ms
    return Pairs(4, b"".join((
        _ENTRY_ID_B, _LENGTH(len(origin)), origin, _ATTEMPTS_B, _LENGTH(len(tried)), tried,
        _FIRST_FAILED_AT_B, _LENGTH(len(first)), first, _FAILED_AT_B, _LENGTH(len(failed)),
        failed)))


_LETTER_HEAD = struct.Struct(">HBI").pack
CARRIED, COPIED = 0, 1
"""Where a letter's original fields come from: carried in the letter, or copied by the
script from the entry in the source stream (the pool then sends only the metadata)."""


def letter(entry_id: str, fields: Pairs, failure: int = 0, origin: int = CARRIED) -> bytes:
    """One dead letter in a batch's letters (:func:`queue_dead_letters`): the number of its
    shared part (0: none), where its original fields come from (:data:`CARRIED` among
    ``fields``, or :data:`COPIED`), the entry id, then its fields (with no shared part,
    every one)."""
    eid = entry_id.encode()
    return b"".join((_LETTER_HEAD(failure, origin, len(eid)), eid, _LENGTH(fields.count),
                     fields.body))


def pack_letter(original_fields: Mapping[bytes, bytes], *, entry_id: str, failure: int,
                origin_entry_id: str, attempts: int, first_failed_at_ms: int | None,
                failed_at_ms: int, rest: Pairs | None = None) -> bytes:
    """The dead letter of ``entry_id`` in a batch's letters, with its own fields: the
    original ones (any stale ``dlq_*`` dropped), ``dlq_entry_id``, ``dlq_attempts``,
    ``dlq_first_failed_at`` and ``dlq_failed_at``; the rest is its shared part number
    ``failure`` (:func:`pack_failure`, sent once per batch), or, with ``failure`` 0, the
    fields ``rest`` (:func:`failure_pairs`) carried in the letter itself."""
    own = _own(original_fields, origin_entry_id, attempts, first_failed_at_ms, failed_at_ms)
    if rest is not None:
        own = Pairs(own.count + rest.count, own.body + rest.body)
    return letter(entry_id, own, failure)


def copy_letter(*, entry_id: str, failure: int, origin_entry_id: str, attempts: int,
                first_failed_at_ms: int | None, failed_at_ms: int,
                rest: Pairs | None = None) -> bytes:
    """:func:`pack_letter` for an entry whose fields are still the ones stored in its
    source stream: the script copies them from there (as XRANGE reads them), so the letter
    carries only the metadata, and a flood of dead letters does not send every payload
    back. An entry no longer in the stream (trimmed or deleted while pending) is left
    pending by the script, its reply 0: send it again with :func:`pack_letter`."""
    own = _meta(origin_entry_id, attempts, first_failed_at_ms, failed_at_ms)
    if rest is not None:
        own = Pairs(own.count + rest.count, own.body + rest.body)
    return letter(entry_id, own, failure, COPIED)


def failure_pairs(constant: Pairs, *, error_type: str, error: str, traceback: str,
                  reason: str) -> Pairs:
    """The fields every message failing the same way in the same handler shares:
    ``constant`` (:func:`pack_constant`), the error type, message (its head), traceback
    (its tail) and reason."""
    failure = _pairs((name.encode(), value.encode("utf-8", "replace")) for name, value in (
        (ERROR_TYPE, error_type), (ERROR, _head(error, ERROR_LIMIT)),
        (TRACEBACK, _tail(traceback, TRACEBACK_LIMIT)), (REASON, reason)))
    return Pairs(constant.count + failure.count, constant.body + failure.body)


def pack_failure(constant: Pairs, *, error_type: str, error: str, traceback: str,
                 reason: str) -> bytes:
    """:func:`failure_pairs` as a shared part of a batch (:func:`queue_dead_letters`):
    packed once for as many dead letters."""
    return failure_pairs(constant, error_type=error_type, error=error, traceback=traceback,
                         reason=reason).packed()


def pack_dead_letter(original_fields: Mapping[bytes, bytes], constant: Pairs, *,
                     origin_entry_id: str, attempts: int, error_type: str, error: str,
                     traceback: str, first_failed_at_ms: int | None, failed_at_ms: int,
                     reason: str) -> bytes:
    """:func:`dead_letter_fields`, packed whole (``fields_lib.lua``'s binary packing)
    without building the dict, for a script that takes one packed dead letter (the saga
    scripts). ``constant`` comes from :func:`pack_constant`."""
    own = _own(original_fields, origin_entry_id, attempts, first_failed_at_ms, failed_at_ms)
    rest = failure_pairs(constant, error_type=error_type, error=error, traceback=traceback,
                         reason=reason)
    return Pairs(own.count + rest.count, own.body + rest.body).packed()


async def dead_letter(
    client_or_pipe: aioredis.Redis,
    *,
    source_stream: str,
    group: str,
    entry_id: str,
    dlq_key: str,
    fields: Fields,
    drop_source: bool = False,
) -> bool:
    """XACK ``entry_id`` on ``source_stream`` and XADD ``fields`` (see
    :func:`dead_letter_fields`) to ``dlq_key``, in one script. False if the entry was
    already acked: nothing is added, the message is not dead-lettered twice.

    ``drop_source`` also XDELs the entry (for the handler's own retry stream). On a pipeline
    the script is only queued and this returns True; ``execute()``'s reply holds the new
    dead letter's id, or None.
    """
    args: list[Any] = [group, "1" if drop_source else "0", 0,
                       letter(entry_id, _pairs((_b(k), _b(v)) for k, v in fields.items()))]
    reply = await _DEAD_LETTER(client_or_pipe, [source_stream, dlq_key, dlq_counts_of(dlq_key)],
                               args)
    if isinstance(reply, Pipeline):
        return True
    return reply[0] is not None


Letter = tuple[Any, ...]
"""One dead letter of a batch: the number of its shared part (0: none), that part
(:func:`pack_failure`; b"" for none) and the letter (:func:`pack_letter`,
:func:`copy_letter` or :func:`letter`); anything after those three is the caller's. A
shared part's number stands for the same part wherever it is used in one batch."""


def queue_dead_letters(pipe: Any, *, source_stream: str, group: str, dlq_key: str,
                       letters: Iterable[Letter], drop_source: bool = False) -> None:
    """Add one ``dead_letter.lua`` call for a batch to ``pipe``: each shared part once, and
    the letters together as one argument (its reply: one result per letter, in order; see
    the script) (redis-py packs each argument of a command
    separately, at a cost that grows with the command: one per letter cost more than the
    rest of a dead letter)."""
    shared: dict[int, bytes] = {}
    records: list[bytes] = []
    for one in letters:
        failure = one[0]
        if failure and failure not in shared:
            shared[failure] = one[1]
        records.append(one[2])
    args: list[Any] = [group, "1" if drop_source else "0", len(shared)]
    for failure, common in shared.items():
        args += (failure, common)
    args.append(b"".join(records))
    _DEAD_LETTER.queue(pipe, [source_stream, dlq_key, dlq_counts_of(dlq_key)], args)


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


async def replay(
    client: aioredis.Redis, *, dlq_key: str, retry_stream: str, entry_ids: Iterable[str]
) -> list[str]:
    """Move the dead letters ``entry_ids`` to ``retry_stream`` (the handler's own), in
    batches of :data:`BATCH`, each batch one script. Returns the ids moved; ids no longer
    in the stream are skipped. The redelivery has ``attempt`` 1, no ``first_failed_at``, its
    ``origin_entry_id`` and ``replayed_from`` = the dead letter's id."""
    ids = [check_entry_id(i) for i in entry_ids]
    keys = [dlq_key, retry_stream, dlq_counts_of(dlq_key)]
    done: list[str] = []
    for start in range(0, len(ids), BATCH):
        reply = await _REPLAY(client, keys, ids[start : start + BATCH])
        done.extend(_s(r) for r in reply)
    return done


async def purge(client: aioredis.Redis, *, dlq_key: str, entry_ids: Iterable[str]) -> int:
    """Delete dead letters for good, in batches of :data:`BATCH` (``purge.lua``, which
    also takes each from the counts by error type); returns how many were deleted."""
    ids = [check_entry_id(i) for i in entry_ids]
    keys = [dlq_key, dlq_counts_of(dlq_key)]
    removed = 0
    for start in range(0, len(ids), BATCH):
        removed += int(await _PURGE(client, keys, ids[start : start + BATCH]))
    return removed


async def stored_counts(client: aioredis.Redis, *, dlq_key: str) -> dict[str, int] | None:
    """Dead letters by error type from the counts the scripts keep (one HGETALL, no
    scan), most frequent first; None when they cannot be trusted: no counts but a non-empty
    stream (dead letters written before the counts existed), or totals that differ from
    XLEN. Callers then fall back to :func:`count_by_error_type`."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(dlq_counts_of(dlq_key))
    pipe.xlen(dlq_key)
    raw, length = await pipe.execute()
    counts = {_s(k): int(v) for k, v in raw.items() if int(v) > 0}
    if sum(counts.values()) != int(length):
        return None
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


async def rebuild_counts(client: aioredis.Redis, *, dlq_key: str) -> dict[str, int]:
    """Count by a scan and store the result as the counts (for dead letters written
    before the counts existed). Not atomic with concurrent dead-lettering: run it when the
    handler is quiet."""
    counts = await count_by_error_type(client, dlq_key=dlq_key)
    key = dlq_counts_of(dlq_key)
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    if counts:
        pipe.hset(key, mapping=dict(counts.items()))
    await pipe.execute()
    return counts


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter, parsed. ``fields`` are the original message's, without metadata."""

    entry_id: str
    handler: str
    stream: str
    origin_entry_id: str
    attempts: int
    error_type: str
    error: str
    traceback: str
    first_failed_at_ms: int | None
    failed_at_ms: int
    consumer: str
    host: str
    reason: str
    fields: dict[bytes, bytes]

    @property
    def dead_lettered_at_ms(self) -> int:
        """When the entry was added, by Redis's clock (its id): what time filters use."""
        return _time_of(self.entry_id)

    @property
    def payload(self) -> bytes | None:
        return self.fields.get(PAYLOAD)

    @property
    def message_id(self) -> str:
        raw = self.fields.get(ID)
        return _s(raw) if raw else self.origin_entry_id

    def payload_json(self) -> Any:
        """The payload parsed as JSON, or its text when it is not JSON (None if absent)."""
        raw = self.payload
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view, for ``--json`` output."""
        return {
            "id": self.entry_id,
            "handler": self.handler,
            "stream": self.stream,
            "origin_entry_id": self.origin_entry_id,
            "message_id": self.message_id,
            "attempts": self.attempts,
            "error_type": self.error_type,
            "error": self.error,
            "reason": self.reason,
            "first_failed_at_ms": self.first_failed_at_ms,
            "failed_at_ms": self.failed_at_ms,
            "consumer": self.consumer,
            "host": self.host,
            "traceback": self.traceback,
            "payload": self.payload_json(),
            "headers": {
                _s(k): _s(v) for k, v in self.fields.items() if k != PAYLOAD
            },
        }


def _time_of(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def parse_dead_letter(entry_id: str | bytes, fields: Mapping[bytes, bytes]) -> DeadLetter:
    """A dead-letter entry as read from the stream (bytes fields). Missing metadata
    (an entry some other tool wrote) reads as empty, never as an error."""
    eid = _s(entry_id)
    meta = {_s(k): _s(v) for k, v in fields.items() if k.startswith(PREFIX.encode())}
    original = {k: v for k, v in fields.items() if not k.startswith(PREFIX.encode())}
    return DeadLetter(
        entry_id=eid,
        handler=meta.get(HANDLER, ""),
        stream=meta.get(STREAM, ""),
        origin_entry_id=meta.get(ENTRY_ID, ""),
        attempts=_int(meta.get(ATTEMPTS)) or 0,
        error_type=meta.get(ERROR_TYPE, ""),
        error=meta.get(ERROR, ""),
        traceback=meta.get(TRACEBACK, ""),
        first_failed_at_ms=_int(meta.get(FIRST_FAILED_AT)),
        failed_at_ms=_int(meta.get(FAILED_AT)) or _time_of(eid),
        consumer=meta.get(CONSUMER, ""),
        host=meta.get(HOST, ""),
        reason=meta.get(REASON, ""),
        fields=original,
    )


async def get_dead_letter(
    client: aioredis.Redis, *, dlq_key: str, entry_id: str
) -> DeadLetter | None:
    rows: Any = await client.xrange(dlq_key, check_entry_id(entry_id), entry_id, count=1)
    return parse_dead_letter(rows[0][0], rows[0][1]) if rows else None


async def iter_dead_letters(
    client: aioredis.Redis,
    *,
    dlq_key: str,
    error_type: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    page_size: int = BATCH,
) -> AsyncIterator[DeadLetter]:
    """Dead letters of one handler, oldest first (or newest first), filtered by error type
    and by the time they were dead-lettered (``since_ms`` <= t <= ``until_ms``, t being the
    entry id's time, so the range is an XRANGE, not a scan), at most
    ``limit`` of them; read in pages of ``page_size``."""
    low = "-" if since_ms is None else str(max(0, since_ms))
    high = "+" if until_ms is None else str(max(0, until_ms))
    yielded = 0
    while limit is None or yielded < limit:
        rows: Any
        if newest_first:
            rows = await client.xrevrange(dlq_key, high, low, count=page_size)
        else:
            rows = await client.xrange(dlq_key, low, high, count=page_size)
        if not rows:
            return
        for raw_id, fields in rows:
            letter = parse_dead_letter(raw_id, fields)
            if error_type is not None and letter.error_type != error_type:
                continue
            yield letter
            yielded += 1
            if limit is not None and yielded >= limit:
                return
        last = _s(rows[-1][0])
        if newest_first:
            high = f"({last}"
        else:
            low = f"({last}"
        if len(rows) < page_size:
            return


async def list_dead_letters(
    client: aioredis.Redis,
    *,
    dlq_key: str,
    error_type: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[DeadLetter]:
    """:func:`iter_dead_letters` as a list."""
    return [
        letter
        async for letter in iter_dead_letters(
            client, dlq_key=dlq_key, error_type=error_type, since_ms=since_ms,
            until_ms=until_ms, limit=limit, newest_first=newest_first,
        )
    ]


async def count_dead_letters(
    client: aioredis.Redis,
    *,
    dlq_key: str,
    error_type: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> int:
    """How many dead letters match; without filters just XLEN (no reading)."""
    if error_type is None and since_ms is None and until_ms is None:
        return int(await client.xlen(dlq_key))
    n = 0
    async for _ in iter_dead_letters(client, dlq_key=dlq_key, error_type=error_type,
                                     since_ms=since_ms, until_ms=until_ms,
                                     page_size=COUNT_PAGE):
        n += 1
    return n


async def count_by_error_type(
    client: aioredis.Redis,
    *,
    dlq_key: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> dict[str, int]:
    """Dead letters of one handler counted by error type, most frequent first."""
    counts: Counter[str] = Counter()
    async for letter in iter_dead_letters(client, dlq_key=dlq_key, since_ms=since_ms,
                                          until_ms=until_ms, page_size=COUNT_PAGE):
        counts[letter.error_type or "?"] += 1
    return dict(counts.most_common())


__all__ = [
    "METADATA_FIELDS",
    "DeadLetter",
    "Letter",
    "Pairs",
    "check_entry_id",
    "copy_letter",
    "count_by_error_type",
    "count_dead_letters",
    "dead_letter",
    "dead_letter_fields",
    "failure_pairs",
    "get_dead_letter",
    "iter_dead_letters",
    "letter",
    "list_dead_letters",
    "pack_constant",
    "pack_dead_letter",
    "pack_failure",
    "pack_letter",
    "pack_pairs",
    "parse_dead_letter",
    "purge",
    "queue_dead_letters",
    "rebuild_counts",
    "replay",
    "stored_counts",
]
