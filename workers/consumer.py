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
        self.in_flight: InFlight = {}
        self._on_failure = on_failure
        self.group = spec.keys.group
        self.streams = spec.keys.read_streams
        self.timeout = spec.timeout if spec.timeout is not None else pool.timeout
        self.claim_after = spec.claim_after or pool.claim_after
        self.max_deliveries = spec.max_deliveries or pool.max_deliveries
        self.tasks: set[asyncio.Task[None]] = set()
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
        for envelope in entries:
            self.start(envelope)
        return len(entries)

    def start(self, envelope: Envelope) -> asyncio.Task[None]:
        """Run one message whose slot is already taken."""
        task = asyncio.create_task(self.run_one(envelope))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- running one message -----------------------------------------------------------

    async def run_one(self, envelope: Envelope) -> None:
        key = (envelope.source, envelope.entry_id)
        started = time.monotonic()
        self.in_flight[key] = started
        try:
            await self.call(envelope)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            await asyncio.shield(self._on_failure(self, envelope, exc, time.monotonic() - started))
        else:
            self.handled += 1
            self.acker.ack(envelope.source, self.group, envelope.entry_id)
        finally:
            self.in_flight.pop(key, None)
            self.limiter.release()

    async def call(self, envelope: Envelope) -> None:
        """Decode the payload and call the handler within its timeout."""
        spec = self.spec
        payload = spec.decode(envelope.payload)
        if spec.wants_context:
            args: tuple[Any, ...] = (payload, Context(self.app, spec.name, spec.stream, envelope))
        else:
            args = (payload,)
        timeout = self.timeout
        if spec.is_async:
            if timeout is None:
                await spec.func(*args)
                return
            try:
                async with asyncio.timeout(timeout):
                    await spec.func(*args)
            except TimeoutError:
                raise HandlerTimeout(f"{spec.name} ran longer than {timeout}s") from None
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, partial(spec.func, *args))
        if timeout is None:
            await future
            return
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise HandlerTimeout(
                f"{spec.name} ran longer than {timeout}s (its thread cannot be stopped and "
                "keeps one of the pool's threads until it returns)"
            ) from None

    # -- shutdown ----------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait for every running message of this handler."""
        while self.tasks:
            await asyncio.wait(list(self.tasks))

    def cancel_running(self) -> int:
        for task in self.tasks:
            task.cancel()
        return len(self.tasks)
