"""A handler's circuit breaker at run time: may this consumer read, and how much?

The breaker's state lives in Redis (``queues.breaker_store``) and is shared by the fleet.
To keep it off the per-message path, a consumer keeps the state it last heard:

* every ack pipeline carries the outcomes recorded since the last one (one Lua call per
  batch) and its reply is the breaker's state, so a busy consumer hears about a change,
  its own or another process's or an operator's, within one batch;
* while that state is ``closed`` and fresh, reading needs no extra round trip; otherwise
  (open, half-open, forced, or not heard of for a second) the consumer asks first
  (``acquire``), which also hands out the fleet-wide half-open probe leases.

Open means stop reading: messages wait in the stream. Entries fetched just before the
breaker opened are parked in the delayed set until it may close, without using up an
attempt; with a ``fallback``, messages go to the fallback instead and are acked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from queues import breaker_store as store
from queues.keys import HandlerKeys
from workers.breaker import CircuitBreaker

log = logging.getLogger("seawall.breaker")

FRESH_FOR = 1.0
"""Seconds a "closed" heard from Redis is trusted without asking again."""
PROBE_LEASE_TTL = 10.0
"""Longest life of a half-open probe lease between renewals: a prober that dies (SIGKILL,
a lost host) holds its permits at most this long, however long the handler's timeout.
A live prober renews the lease every third of it while its probes run."""
POLL_WHILE_SHUT = 1.0
"""Longest wait before asking again while reading is not allowed (an operator may close)."""
BLOCKING = frozenset({store.OPEN, store.FORCED_OPEN})
_ZERO = ord("0")
_SUCCESS_DIGIT = _ZERO + store.SUCCESS


class BreakerGate:
    """One consumer's view of its handler's breaker."""

    def __init__(self, breaker: CircuitBreaker, keys: HandlerKeys, handler: str,
                 lease_ttl: float) -> None:
        self.breaker = breaker
        self.params = breaker.params()
        self._wire_args = self.params.wire_args()
        self._breaker_key = keys.breaker.encode()
        self._slow_call = breaker.slow_call
        self.keys = keys
        self.handler = handler
        self.lease_ttl_ms = max(1000, int(lease_ttl * 1000))
        self._state = store.CLOSED
        self.blocking = False
        """Reading is shut (open, forced open): fetched messages go to the fallback or are
        parked. Kept beside ``state`` (set with it), as it is asked for every message."""
        self.open_until_ms: int | None = None
        self._heard_at = float("-inf")
        self._outcomes = bytearray()
        """Outcome codes since the last flush, one ASCII digit each (the script's format)."""
        self._lease: str | None = None
        self._probes_out = 0
        """Messages read under the current lease and not yet recorded."""
        self._transitions: dict[tuple[str, str], int] = {}
        """(from, to) -> times heard since the last ``take_transitions`` (metrics)."""

    @property
    def state(self) -> str:
        """The breaker's state as last heard."""
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = state
        self.blocking = state in BLOCKING

    @property
    def heard(self) -> bool:
        """Whether this gate has heard the breaker's state from Redis yet."""
        return self._heard_at != float("-inf")

    def take_transitions(self) -> dict[tuple[str, str], int]:
        """The changes of state heard since the last take, (from, to) -> times."""
        taken, self._transitions = self._transitions, {}
        return taken

    @property
    def closed(self) -> bool:
        """Closed as last heard (or disabled): reading needs no probe permits."""
        return self.state in (store.CLOSED, store.DISABLED)


    def resume_at_ms(self) -> int:
        """When a parked message should come back: when the breaker may let probes in."""
        now_ms = int(time.time() * 1000)
        until = self.open_until_ms or (now_ms + self.params.open_for_ms)
        return max(until, now_ms + 1)

    def _hear(self, state: str, open_until_ms: int | None, reason: str) -> None:
        first = not self.heard
        self._heard_at = time.monotonic()
        if state != self.state and not first:
            # (the first state heard is no transition: a restarted process starts "closed")
            change = (self.state, state)
            self._transitions[change] = self._transitions.get(change, 0) + 1
        if state != self.state:
            level = logging.WARNING if state in BLOCKING else logging.INFO
            log.log(level, "circuit breaker state changed", extra={
                "handler": self.handler, "from": self.state, "to": state, "reason": reason,
                "open_until_ms": open_until_ms})
        self.state = state
        self.open_until_ms = open_until_ms

    # -- before reading ----------------------------------------------------------------

    async def admit(self, client: Any, wanted: int) -> tuple[int | None, float]:
        """How many messages may be read now: ``None`` for no limit (closed), else at most
        that many (0: none; then also how long to wait before asking again)."""
        if self.state == store.CLOSED and time.monotonic() - self._heard_at < FRESH_FOR:
            return None, 0.0
        if self._lease is not None and self._probes_out:
            # Our probes are still running; their outcome decides.
            return 0, 0.05
        grant = await store.acquire(client, self.keys, self.params,
                                    lease_ttl_ms=self.lease_ttl_ms, want=wanted)
        self._hear(grant.state, grant.open_until_ms, _why(self.state, grant.state))
        if grant.lease is not None:
            self._lease = grant.lease
        if not grant.may_read:
            wait = POLL_WHILE_SHUT
            if grant.retry_in_ms is not None:
                wait = min(wait, max(0.01, grant.retry_in_ms / 1000))
            return 0, wait
        if grant.permits is None:
            return None, 0.0
        return min(wanted, grant.permits), 0.0

    @property
    def renew_every(self) -> float:
        """Seconds between renewals of a probe lease whose probes still run."""
        return self.lease_ttl_ms / 3000

    async def renew_lease(self, client: Any) -> None:
        """Keep the probe lease alive while its probes run (see ``PROBE_LEASE_TTL``)."""
        lease = self._lease
        if lease is None or not self._probes_out:
            return
        renewed = await store.renew_lease(client, self.keys, lease,
                                          lease_ttl_ms=self.lease_ttl_ms)
        if not renewed and self._lease == lease:
            log.warning("probe lease lapsed while its probes ran; their outcomes will not "
                        "count as probes", extra={"handler": self.handler, "lease": lease})

    async def renew_forever(self, client: Any) -> None:
        """While this consumer's half-open probes run, keep their lease alive."""
        while True:
            await asyncio.sleep(self.renew_every)
            await self.renew_lease(client)

    @property
    def holds_idle_lease(self) -> bool:
        """A probe lease with nothing running under it: the next flush gives it back."""
        return self._lease is not None and self._probes_out == 0

    def read(self, count: int) -> None:
        """``count`` messages were read under the current grant."""
        if self._lease is not None:
            self._probes_out += count

    # -- after handling ----------------------------------------------------------------

    def record(self, error: BaseException | None, duration: float) -> None:
        if error is None and duration <= self._slow_call:
            self._outcomes.append(_SUCCESS_DIGIT)  # the common case, without classify()
        else:
            self._outcomes.append(_ZERO + self.breaker.classify(error, duration))

    def record_probe_done(self) -> None:
        if self._lease is not None and self._probes_out > 0:
            self._probes_out -= 1

    def contribute(self, pipe: Any) -> Callable[[Any], None] | None:
        """Add this batch's outcomes (and the lease, once its probes are done) to the ack
        pipeline; returns the callback that reads the breaker's state from the reply."""
        if self._lease is not None and self._probes_out > 0:
            # Probing: outcomes only count with the lease, which goes back with the last
            # probe's outcome; hold them until then.
            return None
        lease = self._lease
        if not self._outcomes and lease is None:
            return None
        codes = bytes(self._outcomes)
        self._outcomes.clear()
        if lease is not None:
            self._lease = None
        store.queue_record_codes(pipe, self._breaker_key, self._wire_args, codes, lease)

        def heard(reply: Any) -> None:
            if isinstance(reply, Exception):
                return
            result = store.parse_record_result(reply)
            reason = _why(self.state, result.state)
            if result.changed and result.state == store.OPEN and self.state == store.CLOSED:
                reason = (f"{result.failures} failed and {result.slow_calls} slow of the last "
                          f"{result.calls} calls")
            self._hear(result.state, result.open_until_ms, reason)

        return heard


def _why(before: str, after: str) -> str:
    """The reason a consumer logs for a transition it heard of (it may have been another
    process's outcomes, an operator, or time passing)."""
    if after == store.HALF_OPEN:
        return "open_for has passed: probes may run"
    if after == store.FORCED_OPEN:
        return "forced open by an operator"
    if after == store.DISABLED:
        return "disabled by an operator"
    if before == store.HALF_OPEN and after == store.CLOSED:
        return "the probes succeeded"
    if before == store.HALF_OPEN and after == store.OPEN:
        return "a probe failed, or too many probes were slow"
    if before in (store.FORCED_OPEN, store.DISABLED):
        return "changed by an operator"
    if before == store.OPEN and after == store.CLOSED:
        return "closed by probes in another process, or by an operator"
    if after == store.OPEN:
        return "the failure or slow-call rate reached its threshold"
    return "heard from the fleet"
