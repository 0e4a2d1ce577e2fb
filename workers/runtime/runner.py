"""Running one message, down the layers once: the handler's stack makes an outcome, the
settlement queues it on the ack pipeline, the slot is freed. Nothing here awaits Redis:
the ack pipeline does, in batches."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from queues.envelope import Envelope
from workers.errors import HandlerTimeout
from workers.logs import CURRENT_CALL
from workers.middleware import Call, Next
from workers.outcome import Outcome
from workers.retry import RetryPolicy
from workers.runtime.inflight import InFlight
from workers.runtime.limiter import CapacityLimiter
from workers.runtime.policy import failure_outcome
from workers.runtime.settle import Settler
from workers.runtime.stack import uncancel


class Worker(Protocol):
    """The worker task a message runs on (``workers.runtime.dispatch.WorkerSlot``)."""

    call: Call | None


class Runner:
    """Runs one handler's messages on the pool's workers."""

    __slots__ = ("_in_flight", "_limiter", "_policy", "_pool", "_settler", "_stack", "name",
                 "stream", "timeout")

    def __init__(self, *, name: str, pool: str, stream: str, stack: Next, settler: Settler,
                 limiter: CapacityLimiter, in_flight: InFlight, timeout: float | None,
                 policy: RetryPolicy) -> None:
        self.name = name
        self.stream = stream
        self.timeout = timeout
        self._pool = pool
        self._stack = stack
        self._settler = settler
        self._limiter = limiter
        self._in_flight = in_flight
        self._policy = policy

    async def run(self, envelope: Envelope, worker: Worker) -> None:
        """Run one message whose slot is taken, and settle it. Raises only when cancelled
        at shutdown: the message then stays pending in Redis for the next run."""
        key = (envelope.source, envelope.entry_id)
        started = time.monotonic()
        call = Call(self.name, self._pool, self.stream, envelope, started)
        worker.call = call
        self._in_flight.started(key, started)
        token = CURRENT_CALL.set(call)
        try:
            try:
                outcome = await self._stack(call)
            except asyncio.CancelledError:
                # The watchdog's cancel landed in a built-in layer (an idempotency look-up):
                # the timeout is this message's failure; any other cancel is a shutdown.
                if not call.timed_out:
                    raise
                uncancel()
                call.take_staged()
                outcome = failure_outcome(self._policy, envelope, HandlerTimeout(
                    f"{self.name} ran longer than {self.timeout}s"), time.time())
            except Exception as exc:
                # A built-in layer could not decide (Redis failed in the idempotency
                # look-up, say): the message fails this attempt, as the policy says.
                call.take_staged()
                outcome = failure_outcome(self._policy, envelope, exc, time.time())
            self._settler.settle(call, outcome)
        finally:
            CURRENT_CALL.reset(token)
            self._limiter.release()
            self._in_flight.finished(key)

    def settle_unrun(self, envelope: Envelope, outcome: Outcome) -> None:
        """Settle a message that is not to run at all (a poison message's dead letter);
        an entry whose data was trimmed away, with nothing left to keep, is just acked."""
        if not envelope.fields:
            self._settler.drop(envelope)
            return
        self._settler.settle(Call(self.name, self._pool, self.stream, envelope,
                                  time.monotonic()), outcome)

    def drop(self, envelope: Envelope) -> None:
        """Forget a message that was queued but never started (shutdown)."""
        self._limiter.release()
        self._in_flight.finished(None)
