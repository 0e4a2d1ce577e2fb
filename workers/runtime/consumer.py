"""One handler's consumer inside a pool process: fetch a batch, run each message under the
pool's limiter, hand the outcome to the acker or to the failure path.

The hot path per message is: decode (pydantic-core), call, append the entry id to the ack
batch. Reads are batched (XREADGROUP COUNT = free slots), acks are pipelined, and nothing
else touches Redis per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any

from redis.exceptions import RedisError, ResponseError

from queues import delayed, idempotency, streams
from queues.envelope import ORIGIN_ENTRY_ID, Envelope
from workers.runtime.acker import AckBatcher
from workers.context import Context
from workers.runtime.dispatch import Dispatcher, WorkerSlot
from workers.errors import HandlerTimeout
from workers.runtime.gate import PROBE_LEASE_TTL, BreakerGate
from workers.handler import HandlerFunc, HandlerSpec
from workers.runtime.limiter import CapacityLimiter
from workers.pool_config import PoolConfig

log = logging.getLogger("seawall.consumer")

MOVE_LIMIT = 500
RETRY_POLL_MS = 1000

InFlight = dict[tuple[str, str], float]
"""(source stream, entry id) -> monotonic start time, for every message being handled."""


class HandlerConsumer:
    """Reads and runs one handler's messages in one pool process."""

    def __init__(
        self,
        *,
        app: Any,
        spec: HandlerSpec,
        pool: PoolConfig,
        client: Any,
        consumer: str,
        limiter: CapacityLimiter,
        acker: AckBatcher,
        executor: Executor,
        dispatcher: Dispatcher,
        on_failure: Callable[[HandlerConsumer, Envelope, BaseException, float],
                             Any],
    ) -> None:
        self.app = app
        self.spec = spec
        self.pool = pool
        self.client = client
        self.consumer = consumer
        self.limiter = limiter
        self.acker = acker
        self.executor = executor
        self.dispatcher = dispatcher
        self._waiters: dict[tuple[str, str], asyncio.Future[None]] = {}
        acker.delete_on_ack(spec.keys.retry)
        self._next_move_ms = 0
        self._retry_scheduled = asyncio.Event()
        """Wall-clock ms at which the delayed set is next looked at for due retries."""
        self.outstanding = 0
        """Messages queued or running for this handler."""
        self._settled = asyncio.Event()
        self._settled.set()
        self.in_flight: InFlight = {}
        self._on_failure = on_failure
        self.group = spec.keys.group
        self.streams = spec.keys.read_streams
        self.timeout = spec.timeout if spec.timeout is not None else pool.timeout
        self.claim_after = spec.claim_after or pool.claim_after
        self.max_deliveries = spec.max_deliveries or pool.max_deliveries
        self.handled = 0
        self.failed = 0
        self.fallbacks = 0
        self.parked = 0
        self.gate: BreakerGate | None = None
        if spec.breaker is not None:
            # A probe that ends sooner needs no renewal; a longer one renews its lease.
            lease_ttl = (PROBE_LEASE_TTL if self.timeout is None
                         else min(self.timeout + 5.0, PROBE_LEASE_TTL))
            self.gate = BreakerGate(spec.breaker, spec.keys, spec.name, lease_ttl=lease_ttl)
            acker.contribute(self.gate.contribute)
        self._diverted: set[tuple[str, str]] = set()
        """Entries read while the breaker was shut, for the fallback."""
        self._done_ttl = max(1, int(spec.idempotency_ttl))
        """Seconds an idempotent handler's completion marker lives."""
        self._done_at_fetch: dict[tuple[str, str], bool] = {}
        """Idempotent handlers: whether each fetched entry's message was already completed,
        looked up for the whole batch in one round trip when it was read."""
        self._idle = True
        """The last read found nothing: the next one waits for messages holding one slot,
        not a batch's worth that the pool's other handlers could be using meanwhile."""

    # -- setup -------------------------------------------------------------------------

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            await streams.ensure_group(self.client, stream, self.group)

    # -- retries -----------------------------------------------------------------------

    def retry_due(self, due_ms: int) -> None:
        """A retry of this handler is due at ``due_ms``: look at the delayed set by then."""
        if due_ms < self._next_move_ms:
            self._next_move_ms = due_ms
            self._retry_scheduled.set()

    async def move_retries_forever(self) -> None:
        """Move retries to the handler's retry stream as they come due. The fetch loop's
        blocking XREADGROUP also reads that stream, so it wakes as soon as they land."""
        while True:
            wait_ms = self._next_move_ms - int(time.time() * 1000)
            if wait_ms > 0:
                self._retry_scheduled.clear()
                try:
                    await asyncio.wait_for(self._retry_scheduled.wait(), wait_ms / 1000)
                except TimeoutError:
                    pass
                continue
            await self.move_due_retries()

    async def move_due_retries(self) -> int:
        """Move retries that came due to the handler's retry stream (one atomic script);
        look again when the next one is due, or in a second at the latest (another process
        may schedule one)."""
        now_ms = int(time.time() * 1000)
        keys = self.spec.keys
        moved, next_due = await delayed.move_due(
            self.client, delayed_key=keys.delayed, retry_stream=keys.retry, now_ms=now_ms,
            limit=MOVE_LIMIT)
        if moved >= MOVE_LIMIT:
            self._next_move_ms = now_ms
        else:
            poll = now_ms + RETRY_POLL_MS
            self._next_move_ms = poll if next_due is None else min(next_due, poll)
        return moved

    # -- breaker -----------------------------------------------------------------------

    async def renew_probe_lease_forever(self) -> None:
        """While this consumer's half-open probes run, keep their lease alive."""
        gate = self.gate
        if gate is None:
            return
        while True:
            await asyncio.sleep(gate.renew_every)
            await gate.renew_lease(self.client)

    # -- fetching ----------------------------------------------------------------------

    async def fetch(self, block_ms: int) -> int:
        """Read up to one batch (never more than the free slots; one message when the last
        read found none, so that an idle handler waits for work holding one slot, not the
        pool's) and start every message.

        Returns how many messages were started."""
        wanted = self.pool.batch_size
        if self._idle and (self.gate is None or self.gate.closed):
            wanted = 1  # (but half-open probes may run side by side: ask for them all)
        granted = await self.limiter.acquire_up_to(wanted)
        limit: int | None = None
        divert_all = False
        if self.gate is not None:
            try:
                limit, wait = await self.gate.admit(self.client, granted)
            except BaseException:
                self.limiter.release(granted)
                raise
            if limit == 0:
                if self.spec.fallback is None:
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
                count=granted, block_ms=block_ms,
            )
        except ResponseError as exc:
            self.limiter.release(granted)
            if "NOGROUP" in str(exc):
                await self.ensure_groups()
                return 0
            raise
        except BaseException:
            self.limiter.release(granted)
            raise
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
            if self.gate is not None and self.gate.holds_idle_lease:
                self.acker.nudge()
            return 0
        if self.spec.idempotent:
            await self._look_up_done(entries)
        if divert_all:
            self._diverted.update((e.source, e.entry_id) for e in entries)
        elif limit is not None and self.gate is not None:
            # Probing (half-open): only ``limit`` may reach the handler; COUNT is per
            # stream, so any extra entries are diverted like in the open state.
            self.gate.read(min(limit, len(entries)))
            self._diverted.update((e.source, e.entry_id) for e in entries[limit:])
        self.start(entries)
        return len(entries)

    async def start_recovered(self, envelopes: list[Envelope]) -> None:
        """Start entries taken back from a dead consumer, asking the breaker first: a
        restarted process must not call a dependency whose breaker is open."""
        if self.gate is not None and envelopes:
            limit, _ = await self.gate.admit(self.client, len(envelopes))
            if limit == 0:
                self._diverted.update((e.source, e.entry_id) for e in envelopes)
            elif limit is not None:
                self.gate.read(min(limit, len(envelopes)))
                self._diverted.update((e.source, e.entry_id) for e in envelopes[limit:])
        self.start(envelopes)

    def start(self, envelopes: list[Envelope]) -> None:
        """Queue messages whose slots are already taken on the pool's workers."""
        self.outstanding += len(envelopes)
        self._settled.clear()
        self.dispatcher.submit(self, envelopes)

    def settle(self, count: int = 1) -> None:
        """``count`` messages left this consumer (finished, or dropped unstarted)."""
        self.outstanding -= count
        if self.outstanding <= 0:
            self._settled.set()

    async def run_alone(self, envelope: Envelope) -> None:
        """Run one message (slot already taken) and wait for it to finish."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[(envelope.source, envelope.entry_id)] = done
        await self.start_recovered([envelope])
        await asyncio.shield(done)

    # -- running one message -----------------------------------------------------------

    async def run_one(self, envelope: Envelope, worker: WorkerSlot) -> None:
        """Run one message on a worker; ack it, or hand its failure on. Never raises but
        for cancellation at shutdown (the message then stays pending)."""
        key = (envelope.source, envelope.entry_id)
        started = time.monotonic()
        self.in_flight[key] = started
        gate = self.gate
        done_at_fetch = self._done_at_fetch.pop(key, None) if self.spec.idempotent else None
        try:
            if gate is not None and (gate.blocking or key in self._diverted):
                await self._divert(envelope, key)
                return
            error: BaseException | None = None
            try:
                if self.spec.idempotent and await self._already_done(envelope, done_at_fetch):
                    if gate is not None:
                        gate.record_probe_done()  # a probe that called nothing proves nothing
                    self.acker.ack(envelope.source, self.group, envelope.entry_id)
                    return
                await self.call(envelope)
                if self.spec.idempotent:
                    # In the ack's own pipeline, ahead of the XACK.
                    self.acker.mark_done(self.spec.keys.done(envelope.message_id),
                                         self._done_ttl)
            except asyncio.CancelledError:
                if not worker.timed_out:
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                error = HandlerTimeout(f"{self.spec.name} ran longer than {self.timeout}s")
            except Exception as exc:
                error = exc
            duration = time.monotonic() - started
            if gate is not None:
                gate.record(error, duration)
                gate.record_probe_done()
            if error is None:
                self.handled += 1
                self.acker.ack(envelope.source, self.group, envelope.entry_id)
            else:
                self.failed += 1
                await asyncio.shield(self._on_failure(self, envelope, error, duration))
        finally:
            del self.in_flight[key]
            self.limiter.release()
            self.settle()
            if self._waiters:
                waiter = self._waiters.pop(key, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def _divert(self, envelope: Envelope, key: tuple[str, str]) -> None:
        """The breaker is open: run the fallback and ack, or, without one, park the message
        in the delayed set until the breaker may close (its attempt is not used up)."""
        self._diverted.discard(key)
        fallback = self.spec.fallback
        if fallback is None:
            self._park(envelope)
            return
        try:
            await self.call(envelope, fallback)
        except Exception as exc:
            self.failed += 1
            await asyncio.shield(self._on_failure(self, envelope, exc, 0.0))
            return
        self.fallbacks += 1
        self.acker.ack(envelope.source, self.group, envelope.entry_id)

    def _park(self, envelope: Envelope) -> None:
        assert self.gate is not None
        keys = self.spec.keys
        due_ms = self.gate.resume_at_ms()
        # Parked, not failed: same attempt, and no failure time invented for it.
        fields = dict(envelope.fields)
        fields[ORIGIN_ENTRY_ID] = envelope.origin_entry_id.encode()
        source = envelope.source

        async def op(pipe: Any) -> None:
            await delayed.schedule_retry(
                pipe, source_stream=source, group=self.group, entry_id=envelope.entry_id,
                delayed_key=keys.delayed, due_ms=due_ms, fields=fields,
                drop_source=source == keys.retry)

        self.parked += 1
        self.acker.add_op(op, on_sent=lambda: self.retry_due(due_ms))

    async def _look_up_done(self, envelopes: list[Envelope]) -> None:
        """Which of a fetched batch an idempotent handler already completed: one script
        call for the batch. If Redis fails here, each message asks for itself."""
        try:
            found = await idempotency.completed(
                self.client, [self.spec.keys.done(e.message_id) for e in envelopes])
        except (RedisError, OSError) as exc:
            log.warning("could not look up completed messages; each will ask for itself",
                        extra={"handler": self.spec.name, "error": repr(exc)})
            return
        for envelope, exists in zip(envelopes, found, strict=True):
            self._done_at_fetch[(envelope.source, envelope.entry_id)] = bool(exists)

    async def _already_done(self, envelope: Envelope, done_at_fetch: bool | None) -> bool:
        """An idempotent handler skips a message it already completed: the process died
        between the handler's return and the ack, or the message was published again under
        the same id (a retried step's follow-up). Entries taken back from a dead consumer
        were not looked up at fetch time and ask here."""
        done = done_at_fetch
        if done is None:
            done = bool(await self.client.exists(self.spec.keys.done(envelope.message_id)))
        if done:
            log.info("message already completed by this handler; acking without running",
                     extra={"handler": self.spec.name, "message_id": envelope.message_id,
                            "entry_id": envelope.entry_id})
        return done

    async def call(self, envelope: Envelope, target: HandlerFunc | None = None) -> None:
        """Decode the payload and call the handler, or ``target`` (its fallback); the
        pool's watchdog enforces timeouts."""
        spec = self.spec
        func = target or spec.handler
        payload = spec.decode(envelope.payload)
        if func.wants_context:
            context = Context(self.app, spec.name, spec.stream, envelope,
                              fallback=target is not None)
            args: tuple[Any, ...] = (payload, context)
        else:
            args = (payload,)
        if func.is_async:
            await func.func(*args)
        else:
            await asyncio.get_running_loop().run_in_executor(
                self.executor, partial(func.func, *args))

    # -- shutdown ----------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until none of this handler's messages is queued or running."""
        await self._settled.wait()
