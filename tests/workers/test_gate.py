"""A consumer's breaker gate against a real Redis: the outcomes it classifies reach the
shared window through the ack pipeline, and the pipeline's reply is how it hears the
fleet's state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

from queues import breaker_store as store
from queues import scripts
from queues.keys import HandlerKeys
from workers.breaker import CircuitBreaker, Outcome
from workers.errors import NonRetryable
from workers.runtime.gate import BreakerGate


class Order(BaseModel):
    n: int


class InsufficientFunds(Exception):
    pass


@pytest.fixture
def keys(uid: str, sync_redis: redis.Redis) -> Iterator[HandlerKeys]:
    handler_keys = HandlerKeys(f"orders-{uid}", f"billing.charge-{uid}")
    yield handler_keys
    sync_redis.delete(handler_keys.breaker, handler_keys.breaker_log)


async def _flush(aredis: aioredis.Redis, gate: BreakerGate) -> bool:
    """Send what the gate contributes, as the acker does; True if it contributed."""
    await scripts.load_all(aredis)
    async with aredis.pipeline(transaction=False) as pipe:
        heard = gate.contribute(pipe)
        if heard is None:
            return False
        (reply,) = await pipe.execute(raise_on_error=False)
    heard(reply)
    return True


async def test_every_kind_of_outcome_reaches_the_shared_window(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    breaker = CircuitBreaker(window=20, min_calls=20, slow_call=1.0,
                             exclude=(InsufficientFunds,))
    gate = BreakerGate(breaker, keys, "billing.charge", lease_ttl=10)
    try:
        Order.model_validate({"n": "x"})
    except ValidationError as exc:
        invalid = exc
    gate.record(None, 0.2)                        # success
    gate.record(None, 1.5)                        # slow success
    gate.record(RuntimeError("down"), 0.1)        # failure
    gate.record(TimeoutError("late"), 3.0)        # slow failure
    gate.record(InsufficientFunds(), 0.1)         # excluded: not counted
    gate.record(invalid, 0.0)                     # validation: not counted
    gate.record(NonRetryable("bad order"), 0.0)   # non-retryable: not counted

    assert await _flush(aredis, gate)

    snapshot = await store.read_state(aredis, keys)
    assert snapshot.window == (Outcome.SUCCESS, Outcome.SLOW_SUCCESS, Outcome.FAILURE,
                               Outcome.SLOW_FAILURE)
    # Nothing new to say: the next flush carries no breaker command.
    assert not await _flush(aredis, gate)


async def test_the_ack_reply_tells_the_gate_that_the_fleet_opened_the_breaker(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    breaker = CircuitBreaker(window=4, min_calls=4, failure_rate=0.5, open_for=30.0)
    gate = BreakerGate(breaker, keys, "billing.charge", lease_ttl=10)
    # Given another process recorded two failures,
    await store.record_outcomes(aredis, keys, breaker.params(), [Outcome.FAILURE] * 2)
    # when this consumer's two successes reach the window (four calls, half failed),
    gate.record(None, 0.01)
    gate.record(None, 0.01)
    assert not gate.blocking
    await _flush(aredis, gate)
    # then the reply it gets back shuts reading, until the breaker's reopen time.
    assert gate.blocking and gate.state == "open"
    assert gate.open_until_ms is not None
    assert gate.resume_at_ms() == gate.open_until_ms  # when parked messages come back


async def test_a_prober_renews_its_lease_while_its_probe_runs_and_returns_it_after(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    breaker = CircuitBreaker(window=2, min_calls=2, half_open_calls=1)
    gate = BreakerGate(breaker, keys, "billing.charge", lease_ttl=3)
    assert gate.renew_every == 1.0
    seconds, micros = await aredis.time()
    server_ms = seconds * 1000 + micros // 1000
    # Given a breaker whose open period is over, so the gate's next read is a probe,
    await store.force_open(aredis, keys, duration_ms=1, now_ms=server_ms - 10_000)
    assert await gate.admit(aredis, 5) == (1, 0.0)
    gate.read(1)
    [lease] = (await store.read_state(aredis, keys)).leases
    # when its lease is about to run out (half a second left) while the probe still runs,
    await aredis.hset(keys.breaker, f"lease:{lease.id}", f"1:{server_ms + 500}")
    await gate.renew_lease(aredis)
    # then the renewal gives it the full ttl again,
    [renewed] = (await store.read_state(aredis, keys)).leases
    assert server_ms + 2_900 <= renewed.expires_ms <= server_ms + 3_000 + 5_000
    # and once the probe is done and recorded, the lease is returned and the breaker closes.
    gate.record(None, 0.01)
    gate.record_probe_done()
    assert await _flush(aredis, gate)
    await gate.renew_lease(aredis)  # nothing left to renew
    snapshot = await store.read_state(aredis, keys)
    assert (snapshot.state, snapshot.leases, gate.state) == ("closed", (), "closed")
