"""One handler's fetching inside a pool process: read a batch, ask the breaker first when
it may be shut, look up completion markers for idempotent handlers, and queue the batch
on the pool's workers (``workers.runtime.dispatch``), which run each message down the
handler's stack (``workers.runtime.runner``).

Reads are batched (XREADGROUP COUNT = free slots) and acks are pipelined, so nothing
touches Redis per message on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from queues import idempotency, streams
from queues.envelope import Envelope
from queues.keys import HandlerKeys
from workers.runtime.dispatch import Dispatcher
from workers.runtime.gate import BreakerGate
from workers.runtime.inflight import EntryKey, InFlight
from workers.runtime.limiter import CapacityLimiter
from workers.runtime.runner import Runner

log = logging.getLogger("seawall.consumer")

NOTHING_READ = ("NOGROUP", "UNBLOCKED")
"""Replies of an XREADGROUP that read nothing and call for reading again: the group is
gone, or the blocked read was released (``UNBLOCKED``: a replica took over, the key was
deleted)."""


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (``1700000000000-3`` -> (1700000000000, 3))."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class HandlerConsumer:
    """Reads one handler's messages in one pool process and hands them to its runner."""

    def __init__(self, *, name: str, keys: HandlerKeys, client: Any, consumer: str,
                 batch_size: int, limiter: CapacityLimiter, dispatcher: Dispatcher,
                 runner: Runner, in_flight: InFlight, gate: BreakerGate | None,
                 has_fallback: bool, idempotent: bool, claim_after: float,
                 max_deliveries: int, nudge_acker: Callable[[], None],
                 check_all: Callable[[list[Envelope]], None]) -> None:
        self.name = name
        self.keys = keys
        self.client = client
        self.consumer = consumer
        self.group = keys.group
        self.streams = keys.read_streams
        self.batch_size = batch_size
        self.limiter = limiter
        self.dispatcher = dispatcher
        self.runner = runner
        self.in_flight = in_flight
        self.gate = gate
        self.claim_after = claim_after
        self.max_deliveries = max_deliveries
        self._has_fallback = has_fallback
        self._idempotent = idempotent
        self._nudge_acker = nudge_acker
        self._check_all = check_all
        """The handler's admission, for each batch as it is read (a signing app checks
        its signatures there, ``workers.integrity``)."""
        self.diverted: set[EntryKey] = set()
        """Entries read while the breaker was shut, or beyond the probes granted: they go
        to the fallback or are parked (``BreakerLayer``)."""
        self.done_at_fetch: dict[EntryKey, bool] = {}
        """Idempotent handlers: whether each fetched entry's message was already completed,
        looked up for the whole batch in one round trip when it was read."""
        self._idle = True
        """The last read found nothing: the next one waits for a message holding no slot
        (:meth:`fetch`)."""
        self.newest: dict[str, str] = {}
        """Per stream, the newest entry id this process was handed (read or claimed): an
        entry pending on this consumer with a greater id came from a call whose reply was
        lost, so this process never started it (``recovery.recover_lost_reads``)."""

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            await streams.ensure_group(self.client, stream, self.group)

    async def fetch(self, block_ms: int) -> int:
        """Read up to one batch (never more than the free slots) and start every message.
        Returns how many were started.

        A handler whose last read found nothing waits on Redis for one message holding no
        slot, then takes a slot for what it got (waiting for one if the pool is full; the
        entry is kept fresh meanwhile, so no other process claims it). A pool's handlers
        may outnumber its slots: holding one each, idle handlers took turns at reading,
        and a message published to one of 50 idle handlers of a 16-slot pool waited up to
        2 s for its handler's turn. Only the read after a batch takes its slots first."""
        gate = self.gate
        waits = self._idle and (gate is None or gate.closed)
        # (an idle handler whose breaker is half-open asks for every probe permit at once)
        granted = 0 if waits else await self.limiter.acquire_up_to(self.batch_size)
        limit: int | None = None
        divert_all = False
        if gate is not None:
            try:
                limit, wait = await gate.admit(self.client, max(granted, 1))
            except BaseException:
                self.limiter.release(granted)
                raise
            if limit == 0:
                if not self._has_fallback:
                    self.limiter.release(granted)
                    await asyncio.sleep(wait)
                    return 0
                divert_all, limit = True, None
            elif limit is not None and limit < granted:
                self.limiter.release(granted - limit)
                granted = limit
        try:
            entries = await streams.read_group(
                self.client, self.group, self.consumer, self.streams,
                # Only the read of a handler whose last read found nothing waits on Redis:
                # the read after a batch returns at once, so a batch's worth of slots never
                # sits idle for a second while the pool's other handlers have work.
                count=1 if waits else granted, block_ms=block_ms if self._idle else None)
        except ResponseError as exc:
            self.limiter.release(granted)
            if str(exc).startswith(NOTHING_READ):
                # The group is gone (Redis came back empty), or a blocked read was cut
                # short by a failover or by the stream's deletion: nothing was read, so
                # make sure the groups exist and read again.
                await self.ensure_groups()
                return 0
            raise
        except BaseException:
            self.limiter.release(granted)
            raise
        if entries:
            newest = self.newest
            for envelope in entries:  # (ascending ids per stream: the last is the newest)
                newest[envelope.source] = envelope.entry_id
            if waits:
                granted = await self._slots_for(entries)
        # XREADGROUP's COUNT is per stream: two streams may return up to twice ``granted``.
        extra = len(entries) - granted
        if extra > 0:
            # These entries are ours now and must run; waiting for slots that only they
            # could free would deadlock, so borrow past the limit for this once.
            self.limiter.borrow_over(extra)
        elif extra < 0:
            self.limiter.release(-extra)
        self._idle = not entries
        if not entries:
            if gate is not None and gate.holds_idle_lease:
                self._nudge_acker()  # the next flush gives the lease back
            return 0
        self._check_batch(entries)
        if self._idempotent:
            await self._look_up_done(entries)
        if divert_all:
            self.diverted.update((e.source, e.entry_id) for e in entries)
        elif limit is not None and gate is not None:
            # Probing (half-open): only ``limit`` may reach the handler; COUNT is per
            # stream, so any extra entries are diverted like in the open state.
            gate.read(min(limit, len(entries)))
            self.diverted.update((e.source, e.entry_id) for e in entries[limit:])
        self.start(entries)
        # Let the workers start on this batch before the next read is prepared: measured
        # a few per cent off the publish-to-handler latency (bench/latency.py).
        await asyncio.sleep(0)
        return len(entries)

    async def _slots_for(self, entries: list[Envelope]) -> int:
        """Take slots for entries read without any (at least one; the rest may be
        borrowed), waiting for the pool's turn. Meanwhile they count as running for
        keep-fresh and recovery: they are this process's, if not yet started."""
        running, now = self.in_flight.running, time.monotonic()
        keys = [(e.source, e.entry_id) for e in entries]
        for key in keys:
            running.setdefault(key, now)
        try:
            return await self.limiter.acquire_up_to(len(entries))
        finally:
            for key in keys:
                running.pop(key, None)

    async def start_recovered(self, envelopes: list[Envelope]) -> None:
        """Start entries taken back from a dead consumer, asking the breaker first: a
        restarted process must not call a dependency whose breaker is open."""
        gate = self.gate
        if gate is not None and envelopes:
            try:
                limit, _ = await gate.admit(self.client, len(envelopes))
            except BaseException:
                # Not started: their slots go back; the entries stay pending, claimed again
                # by the next recovery.
                self.limiter.release(len(envelopes))
                raise
            if limit == 0:
                self.diverted.update((e.source, e.entry_id) for e in envelopes)
            elif limit is not None:
                gate.read(min(limit, len(envelopes)))
                self.diverted.update((e.source, e.entry_id) for e in envelopes[limit:])
        self.start(envelopes)

    def handed(self, stream: str, entry_ids: list[str]) -> None:
        """Entries claimed for this process (not read): they may be newer than its reads."""
        for entry_id in entry_ids:
            current = self.newest.get(stream)
            if current is None or id_key(entry_id) > id_key(current):
                self.newest[stream] = entry_id

    def start(self, envelopes: list[Envelope]) -> None:
        """Queue messages whose slots are already taken on the pool's workers."""
        self.in_flight.queued(len(envelopes))
        self.dispatcher.submit(self.runner, envelopes)

    async def run_alone(self, envelope: Envelope) -> None:
        """Run one message (slot already taken) and wait until it is settled."""
        done = self.in_flight.waiter((envelope.source, envelope.entry_id))
        await self.start_recovered([envelope])
        await asyncio.shield(done)

    async def drain(self) -> None:
        """Wait until none of this handler's messages is queued or running."""
        await self.in_flight.drained()

    def _check_batch(self, envelopes: list[Envelope]) -> None:
        """The admission's check of a fetched batch (a signing app's signatures, in one
        loop). If it fails, the entries it did not reach keep no verdict and each is
        checked when it runs, where an error is that message's failure, not the pool's."""
        try:
            self._check_all(envelopes)
        except Exception as exc:
            log.warning("could not check a fetched batch; each message will be checked "
                        "when it runs", extra={"handler": self.name, "error": repr(exc)})

    async def _look_up_done(self, envelopes: list[Envelope]) -> None:
        """Which of a fetched batch an idempotent handler already completed: one script
        call for the batch. If Redis fails here, each message asks for itself."""
        try:
            found = await idempotency.completed(
                self.client, [self.keys.done(e.message_id) for e in envelopes])
        except (RedisError, OSError) as exc:
            log.warning("could not look up completed messages; each will ask for itself",
                        extra={"handler": self.name, "error": repr(exc)})
            return
        for envelope, exists in zip(envelopes, found, strict=True):
            self.done_at_fetch[(envelope.source, envelope.entry_id)] = bool(exists)
