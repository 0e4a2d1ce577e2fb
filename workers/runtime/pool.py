"""A running pool: one bulkhead inside one OS process.

It owns its Redis client (its own connection pool), its concurrency limiter, its thread
pool for sync handlers, and one :class:`~workers.runtime.consumer.HandlerConsumer` per handler.
Stopping is two-step (see :mod:`workers.runtime.signals`): the first request stops fetching and
lets running messages finish within the grace period; the second cancels them. Messages
fetched but not started stay pending and are recovered by the next run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from redis.exceptions import ClusterError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import RetryCallState, wait_exponential_jitter

from queues import idempotency, outbox, registry_store, streams
from queues.connection import MAX_BLOCK_MS, connect, redact
from queues.envelope import Envelope
from workers.app import App
from workers.handler import HandlerSpec
from workers.plugin import BackgroundLoop
from workers.pool_config import PoolConfig
from workers.registry import write_registry
from workers.runtime import recovery
from workers.runtime.acker import AckBatcher
from workers.runtime.consumer import HandlerConsumer
from workers.runtime.counts import OutcomeCounter
from workers.runtime.dispatch import Dispatcher
from workers.runtime.gate import PROBE_LEASE_TTL, BreakerGate
from workers.runtime.inflight import InFlight
from workers.runtime.limiter import CapacityLimiter, PoolStatistics
from workers.runtime.retry_mover import RetryMover
from workers.runtime.runner import Runner
from workers.runtime.settle import Settler
from workers.runtime.stack import build_stack
from workers.runtime.tasks import cancel_and_wait

if TYPE_CHECKING:
    from workers.observability.reporter import Reporter

log = logging.getLogger("seawall.pool")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ClusterError, ConnectionError, OSError)
"""Errors that mean Redis is away for now (on a cluster, also a slot in the middle of a
failover or a migration: redirections that run out); a pool waits and tries again."""
HEARTBEAT_SECONDS = 5.0
SWEEP_SECONDS = 2.0
"""How often a pool looks for follow-ups a dead process left in its streams' outboxes."""
reconnect_wait = wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.2)
"""tenacity's strategy for waiting between attempts to reach Redis again."""


class PoolCrashed(RuntimeError):
    """One of the pool's loops died of an unexpected error."""


INSTANCE_ENV = "SEAWALL_INSTANCE"
"""Names one of several supervisors of the same app on one host (``seawall run`` twice on
a machine): it becomes part of the consumer names, which would otherwise be the same."""


def consumer_name(app: str, pool: str, slot: int, host: str | None = None) -> str:
    """Stable per (host, instance, pool, slot): a restarted process takes its predecessor's
    entries."""
    host = host or socket.gethostname()
    instance = os.environ.get(INSTANCE_ENV)
    if instance:
        host = f"{host}/{instance}"
    return f"{app}:{pool}:{host}:{slot}"


CLOCK_OFFSET_ENV = "SEAWALL_CLOCK_OFFSET"
"""A test hook: seconds added to ``time.time()`` in a pool process, to run one process of
a fleet with its wall clock ahead or behind (the chaos suite's clock-skew scenario)."""


def apply_clock_offset() -> float:
    """Shift this process's ``time.time()`` by ``$SEAWALL_CLOCK_OFFSET`` seconds, if set;
    returns the offset. Monotonic clocks are left alone (they measure, not date)."""
    offset = float(os.environ.get(CLOCK_OFFSET_ENV) or 0)
    if offset:
        real = time.time

        def skewed() -> float:
            return real() + offset

        time.time = skewed
    return offset


def _reconnect_delay(failures: int) -> float:
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = failures
    return float(reconnect_wait(state))


class Pool:
    """One pool's runtime in this process."""

    def __init__(self, app: App, config: PoolConfig, *, slot: int = 0,
                 redis_url: str | None = None, reporter: Reporter | None = None) -> None:
        self.app = app
        self.config = config
        self.slot = slot
        self.url = app.url(redis_url)
        self.consumer = consumer_name(app.name, config.name, slot)
        self.specs = app.handlers_of(config.name)
        self.limiter = CapacityLimiter(config.concurrency)
        self.dispatcher = Dispatcher(config.concurrency)
        self.consumers: list[HandlerConsumer] = []
        self._movers: list[RetryMover] = []
        self._acker: AckBatcher | None = None
        metrics = reporter.metrics if reporter is not None else None
        self.counter = OutcomeCounter() if metrics is None else metrics
        """Settled outcomes per handler and kind, sent to Redis for ``status`` (with a
        reporter that counts messages, its counter, which also counts for ``/metrics``)."""
        self.client: Any = None
        self.reporter = reporter
        """Reports to the supervisor (metrics, heartbeat), when it made a pipe for them."""
        self.last_read = 0.0
        """``time.monotonic()`` when a fetch loop last completed a read (0: never)."""
        self.reconnect_waits = 0
        """Waits for Redis to come back, by every loop that found it gone."""

    def statistics(self) -> PoolStatistics:
        """In flight, capacity and waiting fetchers of this bulkhead, right now."""
        return self.limiter.statistics()

    # -- running -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, cancel: asyncio.Event, grace: float = 30.0) -> None:
        """Serve until ``stop`` is set, then finish within ``grace`` (or at ``cancel``)."""
        if not self.specs:
            log.warning("pool has no handlers; nothing to do", extra={"pool": self.config.name})
        self.client = connect(self.url, max_connections=self._connections_needed(),
                              wait_for_connection=False, reply_timeouts=False)
        streams.read_raw(self.client)
        executor = ThreadPoolExecutor(self.config.concurrency,
                                      thread_name_prefix=f"seawall-{self.config.name}")
        acker = self._acker = AckBatcher(self.client, [self.counter, *self.app.observers])
        self.consumers = [self._assemble(spec, acker, executor) for spec in self.specs]
        log.info("pool starting", extra={"pool": self.config.name, "consumer": self.consumer,
                                         "handlers": [s.name for s in self.specs],
                                         "redis": redact(self.url), "pid": os.getpid()})
        acker.start()
        self.dispatcher.start(self._watchdog_interval())
        background = [
            asyncio.create_task(self._consume(c), name=f"fetch:{c.name}")
            for c in self.consumers
        ]
        background += [asyncio.create_task(self._with_reconnect(mover.run_forever, c.name),
                                           name=f"retries:{c.name}")
                       for c, mover in zip(self.consumers, self._movers, strict=True)]
        background += [asyncio.create_task(
            self._with_reconnect(partial(c.gate.renew_forever, self.client), c.name),
            name=f"probe-lease:{c.name}") for c in self.consumers if c.gate is not None]
        background.append(asyncio.create_task(
            self._with_reconnect(self._sweep_outboxes, "outbox"), name="outbox-sweeper"))
        loops: dict[str, BackgroundLoop] = {}
        for spec in self.specs:
            if spec.plugin is not None:
                loops.update(spec.plugin.background())
        background += [asyncio.create_task(
            self._with_reconnect(partial(loop, self.client), name), name=name)
            for name, loop in loops.items()]
        background.append(asyncio.create_task(
            self._with_reconnect(partial(self.counter.flush_forever, self.client), "counts"),
            name="outcome-counts"))
        background.append(asyncio.create_task(self._keep_fresh(), name="keep-fresh"))
        background.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
        if self.reporter is not None:
            background.append(asyncio.create_task(self.reporter.run(self), name="reporter"))
        try:
            await self._until_stopped(stop, [*background, *acker.tasks])
            log.info("pool stopping: no more fetching", extra={"pool": self.config.name,
                                                               "grace": grace})
            await cancel_and_wait(background[:len(self.consumers)])
            dropped = self.dispatcher.drop_queued()
            unfinished = await self.dispatcher.wait_idle(cancel, grace)
            if dropped or unfinished:
                log.warning("stopping with messages left pending for the next run", extra={
                    "pool": self.config.name, "not_started": dropped, "cancelled": unfinished})
        finally:
            await self.dispatcher.close()
            await cancel_and_wait(background)
            await acker.close()
            try:
                await self.counter.flush(self.client)
            except REDIS_DOWN:
                pass
            if self.reporter is not None:
                await self.reporter.close(self)
            try:
                await registry_store.remove_heartbeat(self.client, self.consumer)
            except REDIS_DOWN:
                pass
            await self.client.aclose()
            executor.shutdown(wait=False, cancel_futures=True)
            log.info("pool stopped", extra={"pool": self.config.name,
                                            "handlers": len(self.consumers)})

    async def _until_stopped(self, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for ``stop``. If one of the pool's own loops dies of an unexpected error, the
        process must not limp on without it: raise, so the supervisor restarts the pool
        (its pending entries are recovered by the new process)."""
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        for task in done:
            if task is not stopped and not task.cancelled() and task.exception() is not None:
                log.critical("pool loop died; exiting so the supervisor restarts the pool",
                             extra={"pool": self.config.name, "loop": task.get_name()},
                             exc_info=task.exception())
                raise PoolCrashed(task.get_name()) from task.exception()

    async def _acker_flush(self) -> None:
        if self._acker is not None:
            await self._acker.flush()

    def _connections_needed(self) -> int:
        """The most Redis connections the pool's own client can use at once: one per
        running message (an idempotent handler's look-up of a message taken back from a
        dead consumer), three loops per handler (fetch, retry mover, probe lease), and the
        acker, heartbeat and keep-fresh loops, with room to spare. Handlers' own calls
        (``ctx.publish``) go through the app's client, which waits for a free connection."""
        return self.config.concurrency + 3 * len(self.specs) + 8

    def _watchdog_interval(self) -> float | None:
        """How often the watchdog looks for overrunning handlers: a tenth of the shortest
        timeout, between 50 ms and 1 s; no watchdog when no handler has a timeout."""
        timeouts = [c.runner.timeout for c in self.consumers if c.runner.timeout is not None]
        if not timeouts:
            return None
        return max(0.05, min(1.0, min(timeouts) / 10))

    async def _consume(self, consumer: HandlerConsumer) -> None:
        """Fetch until cancelled; if Redis goes away, wait (tenacity's jittered backoff)
        and resume."""
        outages = 0
        block_ms = int(min(MAX_BLOCK_MS, consumer.claim_after * 250))
        claim_every = consumer.claim_after / 2
        next_claim = time.monotonic() + claim_every
        recovered = False
        lost_replies = False
        while True:
            try:
                if not recovered:
                    await consumer.ensure_groups()
                    await recovery.recover_own(consumer, self._acker_flush)
                    recovered = True
                if lost_replies:
                    await recovery.recover_lost_reads(consumer)
                    lost_replies = False
                await consumer.fetch(block_ms)
                self.last_read = time.monotonic()
                outages = 0
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + claim_every
                    await recovery.claim_abandoned(consumer)
            except REDIS_DOWN as exc:
                outages += 1
                lost_replies = True  # (a read may have been answered into a lost reply)
                self.reconnect_waits += 1
                delay = _reconnect_delay(outages)
                log.warning("Redis unreachable; retrying", extra={
                    "pool": self.config.name, "handler": consumer.name,
                    "error": repr(exc), "retry_in": round(delay, 2), "attempt": outages})
                await asyncio.sleep(delay)

    async def _with_reconnect(self, loop: Callable[[], Awaitable[None]], what: str) -> None:
        """Run a background loop; while Redis is away, wait with backoff and start it again."""
        outages = 0
        while True:
            try:
                await loop()
            except REDIS_DOWN as exc:
                outages += 1
                self.reconnect_waits += 1
                delay = _reconnect_delay(outages)
                log.warning("Redis unreachable; retrying", extra={
                    "pool": self.config.name, "loop": what,
                    "error": repr(exc), "retry_in": round(delay, 2)})
                await asyncio.sleep(delay)

    async def _keep_fresh(self) -> None:
        """Every third of ``claim_after``, reset the idle time of entries still running, so
        that no other consumer takes over a slow handler's message."""
        interval = min((c.claim_after for c in self.consumers), default=30.0) / 3
        while True:
            await asyncio.sleep(interval)
            cutoff = time.monotonic() - interval
            for c in self.consumers:
                by_stream: dict[str, list[str]] = {}
                for (stream, entry_id), started in list(c.in_flight.running.items()):
                    if started <= cutoff:
                        by_stream.setdefault(stream, []).append(entry_id)
                if by_stream:
                    try:
                        await streams.keep_fresh(c.client, c.group, c.consumer, by_stream)
                    except REDIS_DOWN:
                        pass

    async def _sweep_outboxes(self) -> None:
        """Relay follow-ups that a dead process committed into an outbox and never
        relayed (``queues.outbox``): every stream this pool reads, every few seconds."""
        # (one stream per outbox: a saga's streams all share their saga's)
        sources = sorted({c.keys.outbox: c.keys.stream for c in self.consumers}.values())
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now_ms = int(time.time() * 1000)
            for source in sources:
                swept = await outbox.sweep(self.client, source, now_ms=now_ms)
                if swept.relayed:
                    log.info("relayed follow-ups left in an outbox", extra={
                        "pool": self.config.name, "stream": source, "count": swept.relayed})
                if swept.refused:
                    log.error("Redis refused to write follow-ups from an outbox to their "
                              "stream; they stay in the outbox and are tried again",
                              extra={"pool": self.config.name, "stream": source,
                                     "targets": sorted({r.target for r, _ in swept.refused}),
                                     "count": len(swept.refused),
                                     "error": repr(swept.refused[0][1])[:500]})

    def _assemble(self, spec: HandlerSpec, acker: AckBatcher,
                  executor: ThreadPoolExecutor) -> HandlerConsumer:
        """One handler's parts in this process: breaker gate, retry mover, settlement,
        middleware stack, runner and fetcher."""
        pool = self.config
        timeout = spec.timeout if spec.timeout is not None else pool.timeout
        gate: BreakerGate | None = None
        if spec.breaker is not None:
            # A probe that ends sooner needs no renewal; a longer one renews its lease.
            lease_ttl = (PROBE_LEASE_TTL if timeout is None
                         else min(timeout + 5.0, PROBE_LEASE_TTL))
            gate = BreakerGate(spec.breaker, spec.keys, spec.name, lease_ttl=lease_ttl)
            acker.contribute(gate.contribute)
        acker.delete_on_ack(spec.keys.retry)
        mover = RetryMover(self.client, spec.keys)
        self._movers.append(mover)
        in_flight = InFlight()
        settler = Settler(handler=spec.name, stream=spec.stream, keys=spec.keys,
                          consumer=self.consumer, acker=acker, idempotent=spec.idempotent,
                          marker_ttl=spec.idempotency_ttl, retry_due=mover.retry_due,
                          plugin=spec.plugin)
        diverted: set[tuple[str, str]] = set()
        done_at_fetch: dict[tuple[str, str], bool] = {}
        client, keys = self.client, spec.keys

        async def look_up_done(envelope: Envelope) -> bool:
            [done] = await idempotency.completed(client, [keys.done(envelope.message_id)])
            return done

        admission = self.app.integrity.admission(spec.stream)
        stack = build_stack(spec, executor=executor, timeout=timeout,
                            app_middleware=self.app.middleware_stack, gate=gate,
                            diverted=diverted, done_at_fetch=done_at_fetch,
                            look_up_done=look_up_done, tracing=self.app.tracing,
                            integrity=self.app.integrity, admission=admission)
        runner = Runner(name=spec.name, pool=pool.name, stream=spec.stream, stack=stack,
                        settler=settler, limiter=self.limiter, in_flight=in_flight,
                        timeout=timeout, policy=spec.retry_policy)
        consumer = HandlerConsumer(
            name=spec.name, keys=spec.keys, client=self.client, consumer=self.consumer,
            batch_size=pool.batch_size, limiter=self.limiter, dispatcher=self.dispatcher,
            runner=runner, in_flight=in_flight, gate=gate,
            has_fallback=spec.fallback is not None, idempotent=spec.idempotent,
            claim_after=spec.claim_after or pool.claim_after,
            max_deliveries=spec.max_deliveries or pool.max_deliveries,
            nudge_acker=acker.nudge, check_all=admission.check_all)
        consumer.diverted = diverted
        consumer.done_at_fetch = done_at_fetch
        return consumer

    async def _heartbeat(self) -> None:
        """Register handlers once, then tell ``status`` every few seconds that we are alive."""
        registered = False
        while True:
            try:
                if not registered:
                    await write_registry(self.client, self.app.records_of(self.config.name))
                    registered = True
                await registry_store.write_heartbeat(self.client, self.consumer, {
                    "app": self.app.name, "pool": self.config.name, "pid": os.getpid(),
                    "host": socket.gethostname(), "slot": self.slot,
                    "seen_at": int(time.time() * 1000), **self._stats_json()})
            except REDIS_DOWN:
                pass
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def _stats_json(self) -> dict[str, int]:
        s = self.statistics()
        return {"in_flight": s.in_flight, "capacity": s.capacity, "waiting": s.waiting}
