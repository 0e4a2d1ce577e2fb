"""Running fetched messages on a pool's fixed set of worker tasks.

A pool has ``concurrency`` long-lived worker tasks that take messages from one queue, in
the order they were fetched. No task is created per message, and a worker whose handler
returns without suspending goes straight on to the next message, so a fast handler costs
little more than the handler itself. Timeouts are enforced by one watchdog that cancels a
worker whose message overran its deadline (one timer for the pool, not one per message).

Fetched messages that have not started when the pool stops are dropped from the queue:
they are still pending in Redis, and the next run recovers them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Protocol

from queues.envelope import Envelope
from workers.middleware import Call
from workers.runtime.tasks import cancel_and_wait

log = logging.getLogger("seawall.dispatch")


class Runnable(Protocol):
    """What runs a queued message: a handler's runner (``workers.runtime.runner``)."""

    name: str
    timeout: float | None

    async def run(self, envelope: Envelope, worker: WorkerSlot) -> None: ...

    def drop(self, envelope: Envelope) -> None: ...


class WorkerSlot:
    """One worker task, the message it is running (None: idle) and that one's deadline."""

    __slots__ = ("call", "deadline", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.deadline: float | None = None
        self.call: Call | None = None


class Dispatcher:
    """The pool's worker tasks and their queue."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._queue: deque[tuple[Runnable, Envelope]] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._workers: list[WorkerSlot] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False
        self._waking = 0
        """1 while a woken worker has not yet run: no second one is woken meanwhile."""

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self, watchdog_interval: float | None) -> None:
        for i in range(self.concurrency):
            worker = WorkerSlot()
            worker.task = asyncio.create_task(self._work(worker), name=f"seawall-worker-{i}")
            self._workers.append(worker)
        if watchdog_interval is not None:
            self._watchdog = asyncio.create_task(self._watch(watchdog_interval))

    def submit(self, runner: Runnable, envelopes: list[Envelope]) -> None:
        """Queue messages whose slots are already taken, and wake a worker for them."""
        self._queue.extend([(runner, envelope) for envelope in envelopes])
        self._wake_one()

    def _wake_one(self) -> None:
        """Wake one idle worker, unless one is already on its way. A woken worker that
        finds more queued wakes the next one as it takes its message: handlers that wait on
        I/O fan out over the workers one per turn of the loop, while a batch of handlers
        that never wait is run by one worker in one go, instead of one task switch per
        message."""
        if self._waking:
            return
        idle = self._idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking = 1
                return

    async def _work(self, worker: WorkerSlot) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            if not queue:
                waiter = loop.create_future()
                self._idle.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter.done() and not waiter.cancelled():
                        self._waking = 0
                continue
            runner, envelope = queue.popleft()
            if queue and self._idle:
                self._wake_one()
            timeout = runner.timeout
            worker.deadline = (time.monotonic() + timeout) if timeout is not None else 0.0
            try:
                await runner.run(envelope, worker)
            except Exception:
                # run() turns a handler's errors into outcomes; this is a bug in the
                # bookkeeping. The entry stays pending (redelivered later); the worker
                # carries on.
                log.exception("error while finishing a message", extra={
                    "handler": runner.name, "entry_id": envelope.entry_id})
            finally:
                worker.deadline = None
                worker.call = None

    async def _watch(self, interval: float) -> None:
        """Cancel workers whose message ran past its deadline; the message then fails with
        :class:`~workers.errors.HandlerTimeout` and follows its retry policy."""
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for worker in self._workers:
                deadline, call = worker.deadline, worker.call
                if (deadline and now >= deadline and call is not None and not call.timed_out
                        and worker.task):
                    call.timed_out = True
                    worker.task.cancel()

    def drop_queued(self) -> int:
        """Forget messages not yet started (they stay pending in Redis); returns how many."""
        dropped = len(self._queue)
        while self._queue:
            runner, envelope = self._queue.popleft()
            runner.drop(envelope)
        return dropped

    async def wait_idle(self, cancel: asyncio.Event, grace: float) -> int:
        """Wait until no worker is running a message, the grace period ends, or ``cancel``
        is set; returns how many were still running."""
        deadline = time.monotonic() + grace
        while not cancel.is_set() and time.monotonic() < deadline:
            if not any(w.deadline is not None for w in self._workers):
                return 0
            await asyncio.sleep(0.02)
        return sum(1 for w in self._workers if w.deadline is not None)

    async def close(self) -> None:
        """Cancel every worker (and whatever it runs) and the watchdog."""
        tasks = [w.task for w in self._workers if w.task is not None]
        if self._watchdog is not None:
            tasks.append(self._watchdog)
        await cancel_and_wait(tasks)
        self._workers.clear()
