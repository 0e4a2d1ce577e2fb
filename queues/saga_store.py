"""A saga type's ledger in Redis, changed only by the saga scripts (``queues/lua/saga_*``,
each starting with ``saga_lib.lua``), read by the CLI.

All keys of one saga type carry the tag ``{saga:<name>}`` (``queues.keys.SagaKeys``): its
steps' and compensations' streams, every instance's ledger, stack and timeline, and the
indexes by state and deadline. So a step's ack, its saga's ledger and the next step's event
change in one script, on a single Redis or a Redis Cluster; a follow-up to a stream outside
the saga goes through the saga's outbox like any other (``queues.outbox``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from queues.commit import pack_fields, slot_of
from queues.keys import SagaKeys, dlq_counts_of
from queues.outbox import Relay
from queues.scripts import LuaScript

STATES = ("running", "completed", "compensating", "timed_out", "compensated", "failed")
"""In the order of the scripts' header (saga_lib.lua)."""
FINAL = frozenset({"completed", "compensated", "failed"})

_START = LuaScript("saga_start", libraries=("fields_lib", "saga_lib"))
_STEP = LuaScript("saga_step", libraries=("fields_lib", "saga_lib"))
_FAIL = LuaScript("saga_fail", libraries=("fields_lib", "saga_lib"))
_UNDONE = LuaScript("saga_undone", libraries=("fields_lib", "saga_lib"))
_UNDO_FAILED = LuaScript("saga_undo_failed", libraries=("fields_lib", "saga_lib"))
_ABORT = LuaScript("saga_abort", libraries=("fields_lib", "saga_lib"))
_RESUME = LuaScript("saga_resume", libraries=("fields_lib", "saga_lib"))

Fields = Mapping[str, str | bytes] | Mapping[bytes, bytes]


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


@dataclass(frozen=True, slots=True)
class SagaLayout:
    """What every saga script is told about its saga type (saga_lib.lua's header)."""

    keys: SagaKeys
    undoable: tuple[str, ...]
    """The steps that have a compensation, in declared order."""
    retention_s: int = 7 * 24 * 3600
    outcomes: bool = False
    """The saga has an ``on_outcome`` handler: finished sagas are sent to it."""

    def header(self, now_ms: int) -> tuple[list[str], list[Any]]:
        k = self.keys
        key_list = [*(k.by_state(s) for s in STATES), k.deadlines, k.outcome,
                    k.outbox, *(k.undo(s) for s in self.undoable)]
        args: list[Any] = [k.saga, len(self.undoable), *self.undoable, int(now_ms),
                           int(self.retention_s), "1" if self.outcomes else "0"]
        return key_list, args

    def instance(self, saga_id: str) -> list[str]:
        """The ledger, stack and timeline of one saga."""
        return [self.keys.ledger(saga_id), self.keys.stack(saga_id),
                self.keys.timeline(saga_id)]


# -- starting ----------------------------------------------------------------------------

async def start(client: Any, layout: SagaLayout, *, saga_id: str, first_stream: str,
                fields: Fields, deadline_ms: int, now_ms: int) -> bool:
    """Begin the saga ``saga_id`` and send its first event, once: False if that id is
    running or finished within the retention."""
    keys, args = layout.header(now_ms)
    keys += [layout.keys.ledger(saga_id), layout.keys.timeline(saga_id), first_stream]
    args += [saga_id, int(deadline_ms), pack_fields(fields)]
    return bool(await _START(client, keys, args))


def start_sync(client: Any, layout: SagaLayout, *, saga_id: str, first_stream: str,
               fields: Fields, deadline_ms: int, now_ms: int) -> bool:
    """:func:`start` with a blocking client."""
    keys, args = layout.header(now_ms)
    keys += [layout.keys.ledger(saga_id), layout.keys.timeline(saga_id), first_stream]
    args += [saga_id, int(deadline_ms), pack_fields(fields)]
    return bool(_START.call_sync(client, keys, args))


# -- settling steps and compensations (queued on the ack pipeline) ------------------------

@dataclass(frozen=True, slots=True)
class StepDone:
    """A step that returned: its memo and its events."""

    entry_id: str
    saga_id: str
    step: str
    marker: str
    memo: bytes
    follow_ups: Sequence[tuple[str, Fields]]
    """(target stream key, fields): a step stream of this saga type (the saga goes on), or
    any other stream."""


@dataclass(slots=True)
class StepCommitCall:
    """One queued ``saga_step.lua`` call; reads its reply."""

    outbox: str
    items: list[StepDone]
    outboxed: list[list[tuple[str, bytes]]] = field(default_factory=list)

    def read(self, reply: Sequence[Any]) -> tuple[list[int], list[Relay]]:
        """The code of each message (see saga_step.lua) and the relays it needs."""
        codes: list[int] = []
        relays: list[Relay] = []
        at = 0
        for outboxed in self.outboxed:
            code = int(reply[at])
            at += 1
            codes.append(code)
            if code != 1:
                continue
            for target, packed in outboxed:
                relays.append(Relay(self.outbox, _s(reply[at]), target, packed))
                at += 1
        return codes, relays


class _Keys:
    """A script's KEYS after the header, with an index for each key once."""

    def __init__(self, key_list: list[str]) -> None:
        self.key_list = key_list
        self._index: dict[str, int] = {}

    def add(self, key: str) -> int:
        at = self._index.get(key)
        if at is None:
            self.key_list.append(key)
            at = self._index[key] = len(self.key_list)
        return at

    def add_instance(self, layout: SagaLayout, saga_id: str, extra: str | None = None) -> int:
        """Append one saga's ledger, stack, timeline (and ``extra``) in a row; returns the
        ledger's index (the others follow it)."""
        self.key_list += layout.instance(saga_id)
        if extra is not None:
            self.key_list.append(extra)
        width = 4 if extra is not None else 3
        return len(self.key_list) - width + 1


def queue_step_commit(pipe: Any, layout: SagaLayout, *, source: str, group: str,
                      items: list[StepDone], drop_source: bool, marker_ttl: int,
                      now_ms: int) -> StepCommitCall:
    key_list, args = layout.header(now_ms)
    keys = _Keys(key_list)
    keys.add(source)
    call = StepCommitCall(layout.keys.outbox, items)
    saga_slot = slot_of(source)
    steps_prefix = layout.keys.on("x")[:-1]
    args += [group, "1" if drop_source else "0", int(marker_ttl), len(items)]
    for item in items:
        base = keys.add_instance(layout, item.saga_id, item.marker)
        args += [item.entry_id, item.saga_id, item.step, base, item.memo, len(item.follow_ups)]
        outboxed: list[tuple[str, bytes]] = []
        for target, fields in item.follow_ups:
            packed = pack_fields(fields)
            forward = "1" if target.startswith(steps_prefix) else "0"
            if slot_of(target) == saga_slot:
                args += [keys.add(target), forward, target, packed]
            else:
                outboxed.append((target, packed))
                args += [0, "0", target, packed]
        call.outboxed.append(outboxed)
    _STEP.queue(pipe, keys.key_list, args)
    return call


@dataclass(frozen=True, slots=True)
class StepFailed:
    """A step that failed for good: ``letter`` (packed dead-letter fields) is empty for an
    abort, which is a decision, not a failure to look at."""

    entry_id: str
    saga_id: str
    step: str
    letter: bytes
    cause: str
    error: str
    undo_self: bool
    memo: bytes


def queue_step_failures(pipe: Any, layout: SagaLayout, *, source: str, dlq: str, group: str,
                        items: list[StepFailed], drop_source: bool, now_ms: int) -> None:
    key_list, args = layout.header(now_ms)
    keys = _Keys(key_list)
    keys.add(source)
    keys.add(dlq)
    keys.add(dlq_counts_of(dlq))
    args += [group, "1" if drop_source else "0", len(items)]
    for item in items:
        base = keys.add_instance(layout, item.saga_id)
        args += [item.entry_id, item.saga_id, item.step, base, item.letter, item.cause,
                 item.error, "1" if item.undo_self else "0", item.memo]
    _FAIL.queue(pipe, keys.key_list, args)


@dataclass(frozen=True, slots=True)
class Undone:
    entry_id: str
    saga_id: str
    step: str
    marker: str
    late: bool


def queue_undone(pipe: Any, layout: SagaLayout, *, source: str, group: str,
                 items: list[Undone], drop_source: bool, marker_ttl: int, now_ms: int) -> None:
    key_list, args = layout.header(now_ms)
    keys = _Keys(key_list)
    keys.add(source)
    args += [group, "1" if drop_source else "0", int(marker_ttl), len(items)]
    for item in items:
        base = keys.add_instance(layout, item.saga_id, item.marker)
        args += [item.entry_id, item.saga_id, item.step, base, "1" if item.late else "0"]
    _UNDONE.queue(pipe, keys.key_list, args)


@dataclass(frozen=True, slots=True)
class UndoFailed:
    entry_id: str
    saga_id: str
    step: str
    letter: bytes
    error: str
    late: bool


def queue_undo_failures(pipe: Any, layout: SagaLayout, *, source: str, dlq: str, group: str,
                        items: list[UndoFailed], drop_source: bool, now_ms: int) -> None:
    key_list, args = layout.header(now_ms)
    keys = _Keys(key_list)
    keys.add(source)
    keys.add(dlq)
    keys.add(dlq_counts_of(dlq))
    args += [group, "1" if drop_source else "0", len(items)]
    for item in items:
        base = keys.add_instance(layout, item.saga_id)
        args += [item.entry_id, item.saga_id, item.step, base, item.letter, item.error,
                 "1" if item.late else "0"]
    _UNDO_FAILED.queue(pipe, keys.key_list, args)


# -- stopping and resuming ----------------------------------------------------------------

async def abort(client: Any, layout: SagaLayout, saga_id: str, *, cause: str,
                only_if_due: bool, now_ms: int) -> bool:
    """Stop a running saga and start compensating it; True if this call did (one caller
    wins). ``only_if_due``: a deadline sweeper, acting only once the deadline passed."""
    keys, args = layout.header(now_ms)
    keys += layout.instance(saga_id)
    args += [saga_id, cause, "1" if only_if_due else "0"]
    return bool(await _ABORT(client, keys, args))


async def due(client: Any, keys: SagaKeys, *, now_ms: int, limit: int = 100) -> list[str]:
    """Ids of running sagas whose deadline has passed."""
    ids = await client.zrangebyscore(keys.deadlines, "-inf", now_ms, start=0, num=limit)
    return [_s(i) for i in ids]


async def resume(client: Any, layout: SagaLayout, saga_id: str, *, action: str,
                 step: str = "", note: str = "", now_ms: int) -> str:
    """``retry`` the failed compensation of a failed saga, or ``skip`` it (a person undid
    the step by hand); returns the step. Raises ``redis.ResponseError`` saying why not."""
    if action not in ("retry", "skip"):
        raise ValueError("action must be 'retry' or 'skip'")
    keys, args = layout.header(now_ms)
    keys += layout.instance(saga_id)
    args += [saga_id, action, step, note]
    return _s(await _RESUME(client, keys, args))


# -- reading (the CLI) ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SagaEntry:
    saga_id: str
    state: str
    since_ms: int


def list_sync(client: Any, keys: SagaKeys, *, states: Sequence[str] = STATES,
              older_than_ms: int | None = None, limit: int = 100) -> list[SagaEntry]:
    """Sagas in ``states``, stalest first (longest in their state), at most ``limit``."""
    out: list[SagaEntry] = []
    for state in states:
        top = "+inf" if older_than_ms is None else older_than_ms
        rows = client.zrangebyscore(keys.by_state(state), "-inf", top, start=0, num=limit,
                                    withscores=True)
        out += [SagaEntry(_s(i), state, int(score)) for i, score in rows]
    out.sort(key=lambda e: e.since_ms)
    return out[:limit]


def counts_sync(client: Any, keys: SagaKeys) -> dict[str, int]:
    """How many sagas are in each state (finished ones within the retention)."""
    with client.pipeline(transaction=False) as pipe:
        for state in STATES:
            pipe.zcard(keys.by_state(state))
        return dict(zip(STATES, (int(n) for n in pipe.execute()), strict=True))


def ledger_sync(client: Any, keys: SagaKeys, saga_id: str) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in client.hgetall(keys.ledger(saga_id)).items()}


def stack_sync(client: Any, keys: SagaKeys, saga_id: str) -> list[str]:
    """Committed steps still to compensate, in commit order."""
    return [_s(s) for s in client.lrange(keys.stack(saga_id), 0, -1)]


def timeline_sync(client: Any, keys: SagaKeys, saga_id: str) -> list[dict[str, str]]:
    return [{_s(k): _s(v) for k, v in fields.items()}
            for _, fields in client.xrange(keys.timeline(saga_id))]


async def ledger(client: Any, keys: SagaKeys, saga_id: str) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (await client.hgetall(keys.ledger(saga_id))).items()}


async def timeline(client: Any, keys: SagaKeys, saga_id: str) -> list[dict[str, str]]:
    return [{_s(k): _s(v) for k, v in fields.items()}
            for _, fields in await client.xrange(keys.timeline(saga_id))]
