"""What a saga test reads at its end: where every saga ended, what the external service saw
of each (counts per idempotency key, the order of its calls), what each saga's timeline
says committed and compensated, and whether anything is left in the saga's streams."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from e2e.failure_helpers import until, where
from saga_helpers import STEPS, Service

from queues import saga_store
from sagas import Saga, SagaOutcome


def _s(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# -- where every saga is -----------------------------------------------------------------

async def states(client: aioredis.Redis, saga: Saga, ids: Iterable[str]) -> dict[str, str]:
    """saga id -> its state ("unknown" without a ledger), in one round trip."""
    ids = list(ids)
    async with client.pipeline(transaction=False) as pipe:
        for saga_id in ids:
            pipe.hget(saga.keys.ledger(saga_id), "state")
        replies = await pipe.execute()
    return {i: _s(r) if r is not None else "unknown" for i, r in zip(ids, replies, strict=True)}


async def until_final(client: aioredis.Redis, saga: Saga, ids: Iterable[str], *,
                      within: float, alive: Callable[[], None] | None = None,
                      interval: float = 0.05) -> dict[str, str]:
    """Wait until every saga in ``ids`` is completed, compensated or failed."""
    ids = list(ids)

    async def final() -> dict[str, str] | None:
        now = await states(client, saga, ids)
        return now if all(s in saga_store.FINAL for s in now.values()) else None

    return await until(final, within=within, interval=interval, alive=alive,
                       what=f"{len(ids)} saga(s) final")


# -- what the external service saw -------------------------------------------------------

@dataclass
class Effects:
    """What the external service saw of one saga."""

    applied: Counter[str] = field(default_factory=Counter)
    """step -> times applied under the saga's idempotency key for that step"""
    undone: Counter[str] = field(default_factory=Counter)
    journal: list[str] = field(default_factory=list)
    """"do charge", "undo reserve"... in the order the service saw them"""
    pids: dict[str, list[int]] = field(default_factory=dict)
    """"do charge" -> the process of each call, when the calls name one"""

    @property
    def calls(self) -> list[str]:
        """The journal with repeats of one call in a row collapsed (a redelivery)."""
        return [c for i, c in enumerate(self.journal) if i == 0 or self.journal[i - 1] != c]


async def effects(service: Service) -> dict[str, Effects]:
    """saga id -> :class:`Effects`. Journal lines are ``<do|undo> <step> <key> [pid]``, the
    key being ``<saga id>:<step>`` (``ctx.saga.key``); a call under any other key fails."""
    out: dict[str, Effects] = {}
    applied, undone = await service.counts()
    for counts, attr in ((applied, "applied"), (undone, "undone")):
        for name, n in counts.items():
            step, _, key = name.partition("|")
            saga_id, _, key_step = key.rpartition(":")
            assert key_step == step, f"{step} was called under the key {key!r}"
            getattr(out.setdefault(saga_id, Effects()), attr)[step] += n
    for line in await service.journal():
        action, step, key, *pid = line.split()
        saga_id = key.rpartition(":")[0]
        one = out.setdefault(saga_id, Effects())
        call = f"{action} {step}"
        one.journal.append(call)
        if pid:
            one.pids.setdefault(call, []).append(int(pid[0]))
    return out


def completed(steps: Iterable[str] = STEPS) -> list[str]:
    """The calls of a completed saga: each step applied, in order."""
    return [f"do {s}" for s in steps]


def compensated(applied: Iterable[str]) -> list[str]:
    """The calls of a compensated saga: the steps applied, then undone last first."""
    applied = list(applied)
    return [f"do {s}" for s in applied] + [f"undo {s}" for s in reversed(applied)]


# -- what the saga's ledger says ---------------------------------------------------------

async def timeline_events(client: aioredis.Redis, saga: Saga, saga_id: str
                          ) -> Counter[tuple[str, str]]:
    """(event, step) -> how often the saga's timeline records it."""
    return (await timelines(client, saga, [saga_id]))[saga_id]


async def timelines(client: aioredis.Redis, saga: Saga, ids: Iterable[str]
                    ) -> dict[str, Counter[tuple[str, str]]]:
    """:func:`timeline_events` of many sagas, in one round trip."""
    ids = list(ids)
    async with client.pipeline(transaction=False) as pipe:
        for saga_id in ids:
            pipe.xrange(saga.keys.timeline(saga_id))
        replies = await pipe.execute()
    return {saga_id: Counter((_s(f[b"event"]), _s(f[b"step"])) for _, f in entries)
            for saga_id, entries in zip(ids, replies, strict=True)}


def hear_outcomes(saga: Saga) -> list[SagaOutcome]:
    """Give ``saga`` an ``on_outcome`` handler (so finished sagas are sent to the outcome
    stream); the list fills with what it hears, in the pool of the test's process."""
    heard: list[SagaOutcome] = []

    @saga.on_outcome(breaker=None)
    async def hear(outcome: SagaOutcome) -> None:
        heard.append(outcome)

    return heard


async def outcomes(client: aioredis.Redis, saga: Saga) -> Counter[str]:
    """saga id -> how many outcomes the saga type's outcome stream holds for it (it has one
    only with an ``on_outcome`` handler): one per finished saga, however often it was
    heard."""
    return Counter(_s(f[b"saga_id"]) for _, f in await client.xrange(saga.keys.outcome))


# -- nothing left behind -----------------------------------------------------------------

def handler_names(saga: Saga) -> list[str]:
    """The saga's steps and compensations, as handler names."""
    names = [f"{saga.name}.{s.name}" for s in saga.steps]
    names += [f"{saga.name}.{s.name}.undo" for s in saga.steps if s.compensation is not None]
    if f"{saga.name}.on_outcome" in saga.app.handlers:
        names.append(f"{saga.name}.on_outcome")
    return names


async def leftovers(client: aioredis.Redis, saga: Saga) -> dict[str, list[str]]:
    """Every message of the saga's steps and compensations still pending, unread, waiting
    on a retry stream or in a delayed set, by handler; and the saga's outbox. Empty when
    every message the saga sent was handled to the end."""
    out: dict[str, list[str]] = {}
    for name in handler_names(saga):
        found = await where(client, saga.app.handlers[name].keys)
        stuck = [*(f"pending {m}" for m in found.pending),
                 *(f"unread {m}" for m in found.unread),
                 *(f"retry {m}" for m in found.retry),
                 *(f"delayed {m}" for m in found.delayed)]
        if stuck:
            out[name] = stuck
    if await client.xlen(saga.keys.outbox):
        out["outbox"] = [_s(e) for e, _ in await client.xrange(saga.keys.outbox)]
    return out


async def settled(client: aioredis.Redis, saga: Saga) -> bool:
    """Nothing is left in the saga's streams (see :func:`leftovers`)."""
    return not await leftovers(client, saga)


async def dead_letters(client: aioredis.Redis, saga: Saga) -> dict[str, int]:
    """handler -> dead letters, for the handlers that have any."""
    out = {}
    for name in handler_names(saga):
        n = await client.xlen(saga.app.handlers[name].keys.dlq)
        if n:
            out[name] = int(n)
    return out
