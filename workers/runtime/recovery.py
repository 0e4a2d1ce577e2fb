"""Taking over entries that were delivered but never finished.

Two sources: this consumer's own pending list when a pool process starts (its previous
incarnation died or was stopped; consumer names are stable per pool slot, so the
replacement takes over at once), and entries of other consumers idle past ``claim_after``
(XAUTOCLAIM ... JUSTID, which does not count a delivery).

Poison messages, the ones that crash their process every time, are told apart by their
delivery count: an entry already delivered ``max_deliveries`` times is dead-lettered
instead of delivered again. Entries delivered more than once are run one at a time, least
delivered first, so one poison message cannot drag the messages fetched with it towards
the limit: each crash counts against the message that was running.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import ResponseError

from queues import streams
from queues.envelope import Envelope
from queues.streams import PendingEntry
from workers.runtime.consumer import HandlerConsumer
from workers.runtime.policy import poison_outcome

log = logging.getLogger("seawall.recovery")

PAGE = 100


@dataclass(frozen=True, slots=True)
class Triage:
    """How pending entries taken over are to be run (see the module's docstring)."""

    poison: list[PendingEntry]
    """Delivered ``max_deliveries`` times already: dead-lettered, not run."""
    fresh: list[str]
    """Delivered at most once: run together, as many at once as there are free slots."""
    suspicious: list[PendingEntry]
    """Delivered more than once: run one at a time, least delivered first."""


def triage(pending: list[PendingEntry], max_deliveries: int) -> Triage:
    """Sort pending entries by their delivery count (pure)."""
    return Triage(
        poison=[p for p in pending if p.deliveries >= max_deliveries],
        fresh=[p.entry_id for p in pending if p.deliveries <= 1 and p.deliveries < max_deliveries],
        suspicious=sorted((p for p in pending if 1 < p.deliveries < max_deliveries),
                          key=lambda p: p.deliveries),
    )


async def _entries(consumer: HandlerConsumer, stream: str, ids: list[str]) -> list[Envelope]:
    """Claim ``ids`` to this consumer (counts one delivery each) and return their entries."""
    consumer.handed(stream, ids)
    return await streams.claim(consumer.client, stream, consumer.group, consumer.consumer, ids)


async def recover(consumer: HandlerConsumer, stream: str, pending: list[PendingEntry]) -> int:
    """Run (or dead-letter) pending entries now owned by this consumer; returns how many."""
    pending = [p for p in pending if (stream, p.entry_id) not in consumer.in_flight]
    sorted_out = triage(pending, consumer.max_deliveries)
    fresh, suspicious = sorted_out.fresh, sorted_out.suspicious
    for entry in sorted_out.poison:
        envelope = await streams.entry(consumer.client, stream, entry.entry_id)
        consumer.runner.settle_unrun(
            envelope, poison_outcome(entry.deliveries, consumer.max_deliveries))
    while fresh:
        # Claim only as many as there are free slots, so they start at once and free
        # their slots for the next ones.
        granted = await consumer.limiter.acquire_up_to(min(PAGE, len(fresh)))
        chunk, fresh = fresh[:granted], fresh[granted:]
        try:
            envelopes = await _entries(consumer, stream, chunk)
        except BaseException:
            consumer.limiter.release(granted)  # (Redis went away: the slots are not used)
            raise
        consumer.limiter.release(len(chunk) - len(envelopes))
        if envelopes:
            await consumer.start_recovered(envelopes)
    for entry in suspicious:
        await consumer.limiter.acquire_up_to(1)
        try:
            envelopes = await _entries(consumer, stream, [entry.entry_id])
        except BaseException:
            consumer.limiter.release()
            raise
        if not envelopes:
            consumer.limiter.release()
            continue
        await consumer.run_alone(envelopes[0])
    return len(pending)


async def recover_own(consumer: HandlerConsumer, flush: Callable[[], Awaitable[None]]) -> int:
    """At start: everything this consumer name still holds from its previous run."""
    total = 0
    for stream in consumer.streams:
        while True:
            pending = await streams.pending_of(
                consumer.client, stream, consumer.group, consumer=consumer.consumer, count=PAGE
            )
            pending = [p for p in pending if (stream, p.entry_id) not in consumer.in_flight]
            if not pending:
                break
            total += await recover(consumer, stream, pending)
            # Wait for this page, and for its acks to reach Redis, before asking again, or
            # XPENDING would list it once more.
            await consumer.drain()
            await flush()
    if total:
        log.info("recovered pending entries", extra={"handler": consumer.name,
                                                     "count": total})
    return total


async def recover_lost_reads(consumer: HandlerConsumer) -> int:
    """After Redis went away: entries delivered to this consumer by a read (or claim) whose
    reply never arrived (the connection was reset, or timed out on a silent link, after
    Redis had answered). They are pending on this consumer with ids newer than anything
    this process was handed, so it never started them: run them now rather than after
    ``claim_after``. (Entries it did start and settle but whose acks have not reached Redis
    yet are not newer, and are left alone: nothing runs twice for this.)"""
    total = 0
    for stream in consumer.streams:
        try:
            pending = await streams.pending_of(
                consumer.client, stream, consumer.group, consumer=consumer.consumer,
                count=PAGE, after=consumer.newest.get(stream))
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                continue  # (Redis came back without the group: the next read makes it)
            raise
        pending = [p for p in pending if (stream, p.entry_id) not in consumer.in_flight]
        if not pending:
            continue
        log.info("taking back entries whose read reply was lost",
                 extra={"handler": consumer.name, "stream": stream, "count": len(pending)})
        total += await recover(consumer, stream, pending)
    return total


async def claim_abandoned(consumer: HandlerConsumer) -> int:
    """Take over entries idle longer than ``claim_after`` (their consumer is gone)."""
    min_idle = int(consumer.claim_after * 1000)
    total = 0
    for stream in consumer.streams:
        ids = await streams.autoclaim_ids(consumer.client, stream, consumer.group,
                                          consumer.consumer, min_idle_ms=min_idle, count=PAGE)
        ids = [i for i in ids if (stream, i) not in consumer.in_flight]
        if not ids:
            continue
        pending = await streams.pending_entries(consumer.client, stream, consumer.group, ids)
        log.info("taking over abandoned entries",
                 extra={"handler": consumer.name, "stream": stream, "count": len(pending)})
        total += await recover(consumer, stream, pending)
    return total
