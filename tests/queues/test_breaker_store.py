"""The breaker's Lua scripts against a real Redis: the same scenarios as the pure machine,
a randomized check that both agree after every call, and half-open leases under contention.

Times are injected (``now_ms``) in multiples of 125 ms, which seconds represent exactly, so
the pure machine (seconds) and the scripts (ms) compute the very same instants."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from queues import breaker_store as store
from queues.connection import connect
from queues.keys import HandlerKeys
from workers import breaker as b
from workers.breaker import BreakerState, CircuitBreaker, Outcome

S, F, SS, SF, IG = (Outcome.SUCCESS, Outcome.FAILURE, Outcome.SLOW_SUCCESS,
                    Outcome.SLOW_FAILURE, Outcome.IGNORED)
T0 = 1_700_000_000_000


@pytest.fixture
def keys(uid: str, sync_redis: redis.Redis) -> Iterator[HandlerKeys]:
    handler_keys = HandlerKeys(f"orders-{uid}", f"billing.charge-{uid}")
    yield handler_keys
    sync_redis.delete(handler_keys.breaker, handler_keys.breaker_log)


async def log_of(aredis: aioredis.Redis, keys: HandlerKeys) -> list[tuple[str, str, str, int]]:
    return [(t.from_state, t.to_state, t.reason, t.at_ms)
            for t in await store.read_transitions(aredis, keys)]


async def test_a_new_breaker_is_closed_and_lets_everyone_read(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker().params()
    grant = await store.acquire(aredis, keys, params, T0, lease_ttl_ms=1000)
    assert grant == store.Grant("closed", True, None, None, None, 0)
    assert await store.read_state(aredis, keys) == store.BreakerSnapshot()


async def test_failures_open_it_and_the_window_is_readable(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(window=10, min_calls=4, failure_rate=0.5, open_for=30.0).params()
    result = await store.record_outcomes(aredis, keys, params, [S, F, IG, S], T0)
    assert (result.state, result.changed, result.calls, result.failures) == ("closed", False, 3, 1)
    result = await store.record_outcomes(aredis, keys, params, [F, S, S], T0 + 1000)
    assert (result.state, result.changed, result.open_until_ms) == ("open", True, T0 + 31_000)
    snap = await store.read_state(aredis, keys)
    assert (snap.state, snap.window, snap.failure_rate, snap.slow_rate) == (
        "open", (S, F, S, F), 0.5, 0.0)  # the rest of the batch after opening is not recorded
    grant = await store.acquire(aredis, keys, params, T0 + 11_000, lease_ttl_ms=1000)
    assert (grant.may_read, grant.retry_in_ms, grant.open_until_ms) == (False, 20_000, T0 + 31_000)


async def test_slow_calls_alone_open_it(aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(window=5, min_calls=5, slow_call_rate=0.8).params()
    result = await store.record_outcomes(aredis, keys, params, [SS, SS, S, SS, SS], T0)
    assert (result.state, result.failures, result.slow_calls) == ("open", 0, 4)


async def test_min_calls_and_ignored_outcomes(aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(window=20, min_calls=10).params()
    result = await store.record_outcomes(aredis, keys, params, [F] * 9 + [IG] * 30, T0)
    assert (result.state, result.calls) == ("closed", 9)
    result = await store.record_outcomes(aredis, keys, params, [F], T0)
    assert result.state == "open"


async def test_a_batch_of_successes_trips_it_where_the_window_reaches_min_calls(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    # Given two failures in a window that needs four calls for a verdict,
    params = CircuitBreaker(window=10, min_calls=4, failure_rate=0.5).params()
    assert (await store.record_outcomes(aredis, keys, params, [F, F], T0)).state == "closed"
    # when a batch of successes arrives, the window holds F F S S at four calls: 50 % failed,
    result = await store.record_outcomes(aredis, keys, params, [IG, S, S, S, S, S], T0)
    # so it opens there, and the rest of the batch is not recorded.
    assert (result.state, result.calls, result.failures) == ("open", 4, 2)


async def test_a_batch_of_successes_longer_than_the_window_leaves_only_successes(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(window=5, min_calls=5, failure_rate=0.5).params()
    await store.record_outcomes(aredis, keys, params, [F, F, S, S], T0)
    result = await store.record_outcomes(aredis, keys, params, [S] * 40, T0)
    assert (result.state, result.calls, result.failures) == ("closed", 5, 0)


async def test_the_hot_path_sends_encoded_codes_with_the_same_effect(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    config = CircuitBreaker(window=4, min_calls=2, failure_rate=0.5)
    wire = config.params().wire_args()
    assert wire == (b"4", b"2", b"0.5", b"1.0", b"30000", b"1")
    codes = store.encode_outcomes([S, IG, SS])
    assert codes == b"042"
    async with aredis.pipeline(transaction=False) as pipe:
        store.queue_record_codes(pipe, keys.breaker.encode(), wire, codes, None)
        store.queue_record_codes(pipe, keys.breaker.encode(), wire, b"11", None)
        store.queue_record_codes(pipe, keys.breaker.encode(), wire, b"09", None)
        first, second, bad = await pipe.execute(raise_on_error=False)
    assert store.parse_record_result(first) == store.RecordResult("closed", False, None, 2, 0, 1)
    assert store.parse_record_result(second).state == "open"
    # A malformed code is refused by the script, not recorded as something else.
    assert isinstance(bad, redis.ResponseError) and "digits 0-4" in str(bad)


async def test_half_open_probe_success_closes_and_failure_reopens(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(window=2, min_calls=2, open_for=30.0, half_open_calls=2).params()
    await store.record_outcomes(aredis, keys, params, [F, F], T0)
    # Given the breaker turned half-open, when a probe fails, then it is open for open_for again
    grant = await store.acquire(aredis, keys, params, T0 + 30_000, lease_ttl_ms=5000)
    assert (grant.state, grant.may_read, grant.permits, grant.lease) == ("half_open", True, 2, "1")
    result = await store.record_outcomes(aredis, keys, params, [S, F], T0 + 31_000,
                                         lease=grant.lease)
    assert (result.state, result.open_until_ms) == ("open", T0 + 61_000)
    # when every probe succeeds, then it closes with an empty window
    grant = await store.acquire(aredis, keys, params, T0 + 61_000, lease_ttl_ms=5000)
    result = await store.record_outcomes(aredis, keys, params, [S, S], T0 + 62_000,
                                         lease=grant.lease)
    assert (result.state, result.changed, result.calls) == ("closed", True, 0)
    assert (await store.read_state(aredis, keys)).leases == ()


async def test_a_trip_and_a_close_each_leave_one_entry_in_the_breakers_log(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    # Given a breaker that trips at two failures of two calls
    params = CircuitBreaker(window=2, min_calls=2, open_for=30.0, half_open_calls=1).params()
    # when failures trip it, it is logged once, with the rate that tripped it,
    await store.record_outcomes(aredis, keys, params, [F, F], T0)
    await store.record_outcomes(aredis, keys, params, [F, F], T0 + 1)  # open: no change
    assert await log_of(aredis, keys) == [("closed", "open", "failure_rate", T0)]
    # and once open_for has passed and a probe succeeds, the two steps to closed follow.
    grant = await store.acquire(aredis, keys, params, T0 + 30_000, lease_ttl_ms=5000)
    await store.acquire(aredis, keys, params, T0 + 30_001, lease_ttl_ms=5000)  # no change
    await store.record_outcomes(aredis, keys, params, [S], T0 + 30_500, lease=grant.lease)
    assert await log_of(aredis, keys) == [
        ("closed", "open", "failure_rate", T0),
        ("open", "half_open", "open_elapsed", T0 + 30_000),
        ("half_open", "closed", "probes_succeeded", T0 + 30_500),
    ]
    transitions = await store.read_transitions(aredis, keys)
    assert [t.reason_text for t in transitions] == [
        "the failure rate reached its threshold", "open_for has passed: probes may run",
        "the probes succeeded"]
    # Reading from a time on (entry ids are the server's clock) leaves out older entries.
    later = int(transitions[-1].entry_id.split("-")[0]) + 1
    assert await store.read_transitions(aredis, keys, since_ms=later) == []


async def test_slow_calls_failed_probes_and_operators_are_logged_with_their_reason(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(window=2, min_calls=2, slow_call_rate=0.5, open_for=1.0,
                            half_open_calls=2).params()
    await store.record_outcomes(aredis, keys, params, [SS, S], T0)
    grant = await store.acquire(aredis, keys, params, T0 + 1000, lease_ttl_ms=5000)
    await store.record_outcomes(aredis, keys, params, [F], T0 + 1100, lease=grant.lease)
    grant = await store.acquire(aredis, keys, params, T0 + 2100, lease_ttl_ms=5000)
    await store.record_outcomes(aredis, keys, params, [SS, SS], T0 + 2200, lease=grant.lease)
    await store.force_open(aredis, keys, now_ms=T0 + 3000)
    await store.force_open(aredis, keys, now_ms=T0 + 3001)  # already forced open: no entry
    await store.disable(aredis, keys, now_ms=T0 + 4000)
    await store.force_close(aredis, keys, now_ms=T0 + 5000)
    await store.force_close(aredis, keys, now_ms=T0 + 5001)  # already closed: no entry
    await store.force_open(aredis, keys, now_ms=T0 + 6000)
    await store.reset(aredis, keys, now_ms=T0 + 7000)
    assert [entry[:3] for entry in await log_of(aredis, keys)] == [
        ("closed", "open", "slow_call_rate"),
        ("open", "half_open", "open_elapsed"),
        ("half_open", "open", "probe_failed"),
        ("open", "half_open", "open_elapsed"),
        ("half_open", "open", "probes_slow"),
        ("open", "forced_open", "forced_open"),
        ("forced_open", "disabled", "disabled"),
        ("disabled", "closed", "forced_close"),
        ("closed", "forced_open", "forced_open"),
        ("forced_open", "closed", "reset"),
    ]
    assert {t.reason for t in await store.read_transitions(aredis, keys)} <= set(store.REASONS)


async def test_the_hot_path_logs_beside_the_breaker_key_it_is_given(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    wire = CircuitBreaker(window=2, min_calls=2).params().wire_args()
    async with aredis.pipeline(transaction=False) as pipe:
        store.queue_record_codes(pipe, keys.breaker.encode(), wire, b"11", None)
        await pipe.execute()
    assert [entry[:3] for entry in await log_of(aredis, keys)] == [
        ("closed", "open", "failure_rate")]
    with pytest.raises(ValueError, match="not a breaker key"):
        store.queue_record_codes(pipe, keys.dlq.encode(), wire, b"1", None)


async def test_stragglers_without_a_lease_are_not_probes(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(window=2, min_calls=2, half_open_calls=1).params()
    await store.record_outcomes(aredis, keys, params, [F, F], T0)
    await store.acquire(aredis, keys, params, T0 + 30_000, lease_ttl_ms=5000)
    before = await store.read_state(aredis, keys)
    await store.record_outcomes(aredis, keys, params, [S, S, F], T0 + 30_500)
    await store.record_outcomes(aredis, keys, params, [F], T0 + 30_500, lease="nope")
    assert await store.read_state(aredis, keys) == before


async def test_outcomes_ride_in_the_acks_pipeline(aredis: aioredis.Redis, keys: HandlerKeys,
                                                   uid: str) -> None:
    params = CircuitBreaker(window=2, min_calls=2).params()
    stream = keys.stream
    await aredis.xgroup_create(stream, keys.group, id="0", mkstream=True)
    entry = await aredis.xadd(stream, {"payload": "{}"})
    await aredis.xreadgroup(keys.group, "c1", {stream: ">"}, count=1)
    try:
        async with aredis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, keys.group, entry)
            store.queue_record_outcomes(pipe, keys, params, [F, F], T0)
            acked, reply = await pipe.execute()
        assert acked == 1
        assert store.parse_record_result(reply).state == "open"
    finally:
        await aredis.delete(stream)


async def test_operators_force_open_close_reset_disable(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(window=2, min_calls=2, half_open_calls=1).params()
    assert await store.force_open(aredis, keys, now_ms=T0) == store.AdminResult("forced_open", None)
    grant = await store.acquire(aredis, keys, params, T0 + 10**9, lease_ttl_ms=1000)
    assert (grant.may_read, grant.retry_in_ms) == (False, None)  # until an operator acts
    assert (await store.force_close(aredis, keys, now_ms=T0)).state == "closed"
    opened = await store.force_open(aredis, keys, duration_ms=60_000, now_ms=T0)
    assert opened.open_until_ms == T0 + 60_000
    grant = await store.acquire(aredis, keys, params, T0 + 60_000, lease_ttl_ms=1000)
    assert (grant.state, grant.permits) == ("half_open", 1)
    assert (await store.reset(aredis, keys)).state == "closed"
    assert await store.read_state(aredis, keys) == store.BreakerSnapshot(lease_seq=1)
    await store.disable(aredis, keys)
    await store.record_outcomes(aredis, keys, params, [F] * 10, T0)
    grant = await store.acquire(aredis, keys, params, T0, lease_ttl_ms=1000)
    assert (grant.state, grant.may_read) == ("disabled", True)


async def test_without_now_the_server_clock_is_used(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    seconds, micros = await aredis.time()
    server_ms = seconds * 1000 + micros // 1000
    result = await store.force_open(aredis, keys, duration_ms=60_000)
    assert result.open_until_ms is not None
    assert 0 <= result.open_until_ms - (server_ms + 60_000) < 5_000


async def test_unknown_outcome_codes_are_refused(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    with pytest.raises(ValueError, match="unknown breaker outcome"):
        await store.record_outcomes(aredis, keys, CircuitBreaker().params(), [7], T0)


# -- half-open leases --------------------------------------------------------------------


async def test_two_processes_get_exactly_half_open_calls_permits_in_total(
        redis_url: str, keys: HandlerKeys) -> None:
    params = CircuitBreaker(half_open_calls=3).params()
    first, second = connect(redis_url), connect(redis_url)
    try:
        await store.force_open(first, keys, duration_ms=1, now_ms=T0)
        grants = await asyncio.gather(*(
            store.acquire(client, keys, params, T0 + 10, lease_ttl_ms=60_000, want=1)
            for _ in range(10) for client in (first, second)
        ))
    finally:
        await first.aclose()
        await second.aclose()
    granted = [g for g in grants if g.may_read]
    assert sum(g.permits or 0 for g in granted) == 3
    assert len({g.lease for g in granted}) == 3
    assert all(g.state == "half_open" for g in grants)


async def test_an_expired_lease_is_reclaimed_so_the_breaker_is_not_stuck(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(half_open_calls=1).params()
    await store.force_open(aredis, keys, duration_ms=1000, now_ms=T0)
    # Given a prober took the only permit and was SIGKILLed (it never records)
    dead = await store.acquire(aredis, keys, params, T0 + 1000, lease_ttl_ms=5000)
    assert dead.permits == 1
    # When another consumer asks before the lease expires, then it must wait
    waiting = await store.acquire(aredis, keys, params, T0 + 5999, lease_ttl_ms=5000)
    assert (waiting.may_read, waiting.retry_in_ms) == (False, 1)
    # When the lease has expired, then the permit is granted again
    fresh = await store.acquire(aredis, keys, params, T0 + 6000, lease_ttl_ms=5000)
    assert (fresh.may_read, fresh.permits) == (True, 1)
    assert fresh.lease != dead.lease
    # and the dead prober's late report counts for nothing; the live probe decides
    late = await store.record_outcomes(aredis, keys, params, [F], T0 + 6500, lease=dead.lease)
    assert late.state == "half_open"
    done = await store.record_outcomes(aredis, keys, params, [S], T0 + 7000, lease=fresh.lease)
    assert done.state == "closed"


async def test_releasing_an_unused_lease_frees_its_permits(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(half_open_calls=2).params()
    await store.force_open(aredis, keys, duration_ms=1000, now_ms=T0)
    grant = await store.acquire(aredis, keys, params, T0 + 1000, lease_ttl_ms=60_000)
    assert grant.permits == 2 and grant.lease is not None
    assert not (await store.acquire(aredis, keys, params, T0 + 1000, lease_ttl_ms=1)).may_read
    await store.release(aredis, keys, params, grant.lease, T0 + 1100)
    again = await store.acquire(aredis, keys, params, T0 + 1100, lease_ttl_ms=60_000)
    assert again.permits == 2


# -- the Lua scripts and the pure machine agree ------------------------------------------


def _random_config(rng: random.Random) -> CircuitBreaker:
    window = rng.randint(1, 6)
    return CircuitBreaker(
        window=window,
        min_calls=rng.randint(1, window),
        failure_rate=rng.choice([0.25, 1 / 3, 0.5, 1.0]),
        slow_call_rate=rng.choice([0.5, 2 / 3, 1.0]),
        open_for=rng.choice([0.125, 0.5, 2.0]),
        half_open_calls=rng.randint(1, 3),
    )


def _id(transition: store.Transition) -> tuple[int, int]:
    ms, _, seq = transition.entry_id.partition("-")
    return int(ms), int(seq)


@pytest.mark.parametrize("seed", range(8))
async def test_lua_and_pure_machine_agree_on_random_histories(
        aredis: aioredis.Redis, keys: HandlerKeys, seed: int) -> None:
    rng = random.Random(seed)
    config = _random_config(rng)
    params = config.params()
    state = BreakerState()
    now_ms = T0
    leases: list[str] = []
    seen: tuple[int, int] = (0, 0)
    for step in range(250):
        before = state.state
        now_ms += rng.choice([0, 125, 250, 500, 1000, 2000])
        now = now_ms / 1000
        roll = rng.random()
        if roll < 0.35:
            ttl_ms, want = rng.choice([125, 500, 3000]), rng.choice([None, 1, 2])
            state, permit = b.acquire(config, state, now, lease_ttl=ttl_ms / 1000, want=want)
            grant = await store.acquire(aredis, keys, params, now_ms, lease_ttl_ms=ttl_ms,
                                        want=want)
            retry_in = None if permit.retry_in is None else round(permit.retry_in * 1000)
            assert (grant.state, grant.may_read, grant.permits, grant.lease, grant.retry_in_ms) == (
                permit.state, permit.allowed, permit.probes, permit.lease, retry_in), step
            if grant.lease:
                leases.append(grant.lease)
        elif roll < 0.45 and leases:
            lease, ttl_ms = rng.choice(leases), rng.choice([125, 500, 3000])
            state, renewed = b.renew(state, lease, now, lease_ttl=ttl_ms / 1000)
            assert await store.renew_lease(aredis, keys, lease, lease_ttl_ms=ttl_ms,
                                           now_ms=now_ms) == renewed, step
        elif roll < 0.95:
            if rng.random() < 0.3:
                # A busy consumer's batch: plain successes (and ignored calls) only, often
                # longer than the window; the script takes a shortcut for these.
                outcomes = [rng.choice([S, S, S, IG]) for _ in range(rng.randint(1, 12))]
            else:
                outcomes = [rng.choice([S, S, F, SS, SF, IG])
                            for _ in range(rng.randint(0, 4))]
            lease = rng.choice(leases) if leases and rng.random() < 0.8 else None
            state = b.record(config, state, outcomes, now, lease=lease)
            result = await store.record_outcomes(aredis, keys, params, outcomes, now_ms,
                                                 lease=lease)
            assert result.state == state.state, step
        else:
            op = rng.choice(["open", "open_for", "close", "close", "reset", "disable"])
            if op == "open":
                state = b.force_open(state, now)
                await store.force_open(aredis, keys, now_ms=now_ms)
            elif op == "open_for":
                state = b.force_open(state, now, duration=1.0)
                await store.force_open(aredis, keys, duration_ms=1000, now_ms=now_ms)
            elif op == "close":
                state = b.force_close(state)
                await store.force_close(aredis, keys, now_ms=now_ms)
            elif op == "reset":
                state = b.reset(state)
                await store.reset(aredis, keys, now_ms=now_ms)
            else:
                state = b.disable(state)
                await store.disable(aredis, keys, now_ms=now_ms)
        snapshot = await store.read_state(aredis, keys)
        assert b.state_from_snapshot(snapshot) == state, f"step {step}"
        # Every change of state left its transitions in the log, chained from the state
        # before the call to the state after it; a call that changed nothing left none.
        # (The log is capped: read what came after the last entry seen.)
        new = [t for t in await store.read_transitions(aredis, keys) if _id(t) > seen]
        seen = _id(new[-1]) if new else seen
        chain = [before] + [t.to_state for t in new]
        assert [t.from_state for t in new] == chain[:-1], f"step {step}"
        assert chain[-1] == state.state, f"step {step}"
        assert all(a != z for a, z in itertools.pairwise(chain)), f"step {step}"


async def test_a_redeploy_lowering_half_open_calls_settles_at_the_next_acquire(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    before, after = CircuitBreaker(half_open_calls=3), CircuitBreaker(half_open_calls=2)
    await store.force_open(aredis, keys, duration_ms=1000, now_ms=T0)
    grant = await store.acquire(aredis, keys, before.params(), T0 + 1000, lease_ttl_ms=9000)
    await store.record_outcomes(aredis, keys, before.params(), [S, S], T0 + 1100,
                                lease=grant.lease)
    grant = await store.acquire(aredis, keys, after.params(), T0 + 1200, lease_ttl_ms=9000)
    assert (grant.state, grant.may_read, grant.permits) == ("closed", True, None)
    state = b.state_from_snapshot(await store.read_state(aredis, keys))
    assert state == BreakerState(lease_seq=1)


# -- renewing a probe lease --------------------------------------------------------------


async def test_a_live_lease_is_renewed_and_keeps_its_permits_from_others(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(half_open_calls=1).params()
    await store.force_open(aredis, keys, duration_ms=1000, now_ms=T0)
    grant = await store.acquire(aredis, keys, params, T0 + 1000, lease_ttl_ms=1000)
    assert grant.lease is not None
    # Given a prober that renews its lease before it expires, again and again,
    for at in (T0 + 1900, T0 + 2800, T0 + 3700):
        assert await store.renew_lease(aredis, keys, grant.lease, lease_ttl_ms=1000, now_ms=at)
    # then well past its first expiry nobody else gets a probe,
    other = await store.acquire(aredis, keys, params, T0 + 4500, lease_ttl_ms=1000)
    assert (other.may_read, other.retry_in_ms) == (False, 200)
    [held] = (await store.read_state(aredis, keys)).leases
    assert (held.id, held.permits, held.expires_ms) == (grant.lease, 1, T0 + 4700)
    # and once it stops renewing, the lease expires and its permit goes to the next prober.
    assert not await store.renew_lease(aredis, keys, grant.lease, lease_ttl_ms=1000,
                                       now_ms=T0 + 4700)
    nxt = await store.acquire(aredis, keys, params, T0 + 4700, lease_ttl_ms=1000)
    assert (nxt.may_read, nxt.permits) == (True, 1) and nxt.lease != grant.lease


async def test_renewing_never_shortens_a_lease_nor_revives_one_the_breaker_dropped(
        aredis: aioredis.Redis, keys: HandlerKeys) -> None:
    params = CircuitBreaker(window=2, min_calls=2, half_open_calls=2).params()
    await store.force_open(aredis, keys, duration_ms=1000, now_ms=T0)
    grant = await store.acquire(aredis, keys, params, T0 + 1000, lease_ttl_ms=60_000, want=1)
    assert grant.lease is not None
    assert await store.renew_lease(aredis, keys, grant.lease, lease_ttl_ms=10, now_ms=T0 + 1001)
    [held] = (await store.read_state(aredis, keys)).leases
    assert held.expires_ms == T0 + 61_000
    # When a probe fails the breaker reopens and every lease is gone: nothing to renew.
    await store.record_outcomes(aredis, keys, params, [Outcome.FAILURE], T0 + 1100,
                                lease=grant.lease)
    assert not await store.renew_lease(aredis, keys, grant.lease, lease_ttl_ms=1000,
                                       now_ms=T0 + 1200)
    assert not await store.renew_lease(aredis, keys, "no-such-lease", lease_ttl_ms=1000,
                                       now_ms=T0 + 1200)
    assert (await store.read_state(aredis, keys)).leases == ()
    with pytest.raises(ValueError, match="lease_ttl_ms"):
        await store.renew_lease(aredis, keys, grant.lease, lease_ttl_ms=0)
