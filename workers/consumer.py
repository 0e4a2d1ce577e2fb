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

from redis.exceptions import ResponseError

from queues import streams
from queues.envelope import Envelope
from workers.acker import AckBatcher
from workers.context import Context
from workers.dispatch import Dispatcher, WorkerSlot
from workers.errors import HandlerTimeout
from workers.handler import HandlerSpec
from workers.limiter import CapacityLimiter
from workers.pool_config import PoolConfig

log = logging.getLogger("seawall.consumer")

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
        self.in_flight: InFlight = {}
        self._on_failure = on_failure
        self.group = spec.keys.group
        self.streams = spec.keys.read_streams
        self.timeout = spec.timeout if spec.timeout is not None else pool.timeout
        self.claim_after = spec.claim_after or pool.claim_after
        self.max_deliveries = spec.max_deliveries or pool.max_deliveries
        self.handled = 0
        self.failed = 0

    # -- setup -------------------------------------------------------------------------

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            await streams.ensure_group(self.client, stream, self.group)

    # -- fetching ----------------------------------------------------------------------

    async def fetch(self, block_ms: int) -> int:
        """Read up to one batch (never more than the free slots) and start every message.

        Returns how many messages were started."""
        granted = await self.limiter.acquire_up_to(self.pool.batch_size)
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
            await self.limiter.acquire_exactly(extra)
        elif extra < 0:
            self.limiter.release(-extra)
        if entries:
            self.start(entries)
        return len(entries)

    def start(self, envelopes: list[Envelope]) -> None:
        """Queue messages whose slots are already taken on the pool's workers."""
        self.dispatcher.submit(self, envelopes)

    async def run_alone(self, envelope: Envelope) -> None:
        """Run one message (slot already taken) and wait for it to finish."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[(envelope.source, envelope.entry_id)] = done
        self.dispatcher.submit(self, [envelope])
        await asyncio.shield(done)

    # -- running one message -----------------------------------------------------------

    async def run_one(self, envelope: Envelope, worker: WorkerSlot) -> None:
        """Run one message on a worker; ack it, or hand its failure on. Never raises but
        for cancellation at shutdown (the message then stays pending)."""
        key = (envelope.source, envelope.entry_id)
        started = time.monotonic()
        self.in_flight[key] = started
        try:
            await self.call(envelope)
        except asyncio.CancelledError:
            if not worker.timed_out:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            self.failed += 1
            error = HandlerTimeout(f"{self.spec.name} ran longer than {self.timeout}s")
            await asyncio.shield(self._on_failure(self, envelope, error,
                                                  time.monotonic() - started))
        except Exception as exc:
            self.failed += 1
            await asyncio.shield(self._on_failure(self, envelope, exc,
                                                  time.monotonic() - started))
        else:
            self.handled += 1
            self.acker.ack(envelope.source, self.group, envelope.entry_id)
        finally:
            del self.in_flight[key]
            self.limiter.release()
            if self._waiters:
                waiter = self._waiters.pop(key, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def call(self, envelope: Envelope) -> None:
        """Decode the payload and call the handler (the pool's watchdog enforces timeouts)."""
        spec = self.spec
        payload = spec.decode(envelope.payload)
        if spec.wants_context:
            args: tuple[Any, ...] = (payload, Context(self.app, spec.name, spec.stream, envelope))
        else:
            args = (payload,)
        if spec.is_async:
            await spec.func(*args)
        else:
            await asyncio.get_running_loop().run_in_executor(
                self.executor, partial(spec.func, *args))

    # -- shutdown ----------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until none of this handler's messages is queued or running."""
        while self.in_flight or self.dispatcher.queued_for(self):
            await asyncio.sleep(0.01)
