"""The circuit breaker's state machine as pure functions, with a fake clock: no Redis, no sleeps."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from pydantic import BaseModel, ValidationError

from workers import breaker as b
from workers.breaker import BreakerState, CircuitBreaker, Outcome, State
from workers.errors import ConfigError, NonRetryable

S, F, SS, SF, IG = (Outcome.SUCCESS, Outcome.FAILURE, Outcome.SLOW_SUCCESS,
                    Outcome.SLOW_FAILURE, Outcome.IGNORED)


class InsufficientFunds(Exception):
    pass


class Order(BaseModel):
    amount: int


def feed(config: CircuitBreaker, state: BreakerState, outcomes: list[Outcome], now: float,
         lease: str | None = None) -> BreakerState:
    return b.record(config, state, outcomes, now, lease=lease)


def opened(config: CircuitBreaker, now: float = 0.0) -> BreakerState:
    state = feed(config, BreakerState(), [F] * config.window, now)
    assert state.state is State.OPEN
    return state


# -- configuration -----------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    config = CircuitBreaker()
    assert (config.window, config.min_calls, config.failure_rate, config.slow_call,
            config.slow_call_rate, config.open_for, config.half_open_calls, config.exclude) == (
        20, 10, 0.5, 60.0, 1.0, 30.0, 1, ())


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        ({"window": 0}, "between 1 and 10000"),
        ({"window": True}, "between 1 and 10000"),
        ({"window": 5, "min_calls": 6}, "lower min_calls or widen the window"),
        ({"failure_rate": 50}, "fraction in (0, 1]"),
        ({"slow_call_rate": 0}, "fraction in (0, 1]"),
        ({"slow_call": -1}, "positive number of seconds"),
        ({"open_for": float("inf")}, "positive number of seconds"),
        ({"half_open_calls": 0}, "half_open_calls is a number of probe calls >= 1"),
        ({"exclude": ("InsufficientFunds",)}, "exclude=(InsufficientFunds,)"),
    ],
)
def test_bad_configuration_fails_naming_the_fix(options: dict[str, object], fix: str) -> None:
    with pytest.raises(ConfigError, match="CircuitBreaker") as caught:
        CircuitBreaker(**options)  # type: ignore[arg-type]
    assert fix in str(caught.value)


def test_exclude_accepts_a_list_or_one_class() -> None:
    assert CircuitBreaker(exclude=[InsufficientFunds]).exclude == (InsufficientFunds,)  # type: ignore[arg-type]
    assert CircuitBreaker(exclude=InsufficientFunds).exclude == (InsufficientFunds,)  # type: ignore[arg-type]


def test_to_record_is_json_with_exclusions_by_qualified_name() -> None:
    record = CircuitBreaker(open_for=1.5, exclude=(InsufficientFunds,)).to_record()
    assert json.loads(json.dumps(record)) == record
    assert record["exclude"] == [f"{__name__}.InsufficientFunds"]
    assert record["open_for"] == 1.5


def test_params_are_the_store_arguments_in_milliseconds() -> None:
    params = CircuitBreaker(open_for=1.5, half_open_calls=2).params()
    assert params.args() == [20, 10, 0.5, 1.0, 1500, 2]


# -- classification ----------------------------------------------------------------------


def validation_error() -> ValidationError:
    try:
        Order.model_validate({"amount": "lots"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a ValidationError")


@pytest.mark.parametrize(
    ("error", "duration", "expected"),
    [
        (None, 0.1, S),
        (None, 2.5, SS),
        (None, 2.0, S),  # "slow" means longer than slow_call
        (RuntimeError("down"), 0.1, F),
        (TimeoutError("slow"), 3.0, SF),
        (InsufficientFunds(), 0.1, IG),
        (NonRetryable("bad message"), 0.1, IG),
        (asyncio.CancelledError(), 5.0, IG),
    ],
)
def test_classify(error: BaseException | None, duration: float, expected: Outcome) -> None:
    config = CircuitBreaker(slow_call=2.0, exclude=(InsufficientFunds,))
    assert config.classify(error, duration) is expected


def test_validation_errors_are_ignored() -> None:
    assert CircuitBreaker().classify(validation_error(), 0.1) is IG


def test_subclasses_of_excluded_errors_are_ignored() -> None:
    class CardDeclined(InsufficientFunds):
        pass

    assert CircuitBreaker(exclude=(InsufficientFunds,)).classify(CardDeclined(), 0.1) is IG


# -- closed ------------------------------------------------------------------------------


def test_closed_opens_when_the_failure_rate_reaches_the_threshold() -> None:
    config = CircuitBreaker(window=10, min_calls=4, failure_rate=0.5, open_for=30.0)
    state = feed(config, BreakerState(), [S, F, S], now=100.0)
    assert state.state is State.CLOSED
    state = b.transition(config, state, F, now=101.0)  # 2 of 4 failed: 50%
    assert state.state is State.OPEN
    assert (state.opened_at, state.open_until) == (101.0, 131.0)
    assert b.rates(state) == (0.5, 0.0)


def test_closed_stays_closed_below_the_threshold() -> None:
    config = CircuitBreaker(window=10, min_calls=4, failure_rate=0.5)
    state = feed(config, BreakerState(), [S, F, S, S, F, S, S, S, F, S], now=0.0)
    assert state.state is State.CLOSED
    assert b.rates(state) == pytest.approx((0.3, 0.0))


def test_min_calls_is_respected() -> None:
    config = CircuitBreaker(window=20, min_calls=10)
    state = feed(config, BreakerState(), [F] * 9, now=0.0)
    assert state.state is State.CLOSED
    assert b.rates(state) == (1.0, 0.0)
    assert b.transition(config, state, F, now=0.0).state is State.OPEN


def test_slow_calls_alone_open_the_breaker() -> None:
    config = CircuitBreaker(window=5, min_calls=5, failure_rate=0.5, slow_call_rate=0.8)
    state = feed(config, BreakerState(), [SS, SS, SS, S], now=0.0)
    assert state.state is State.CLOSED
    state = b.transition(config, state, SS, now=1.0)  # 4 of 5 slow, none failed
    assert state.state is State.OPEN
    assert b.rates(state) == (0.0, 0.8)


def test_the_window_slides() -> None:
    config = CircuitBreaker(window=4, min_calls=4, failure_rate=0.75)
    state = feed(config, BreakerState(), [F, F, S, S, F], now=0.0)
    assert state.window == (F, S, S, F)
    assert state.state is State.CLOSED


@pytest.mark.parametrize(
    "error", [InsufficientFunds(), NonRetryable("bad"), "validation"], ids=["excluded",
                                                                             "non-retryable",
                                                                             "validation"])
def test_ignored_errors_never_trip_the_breaker(error: object) -> None:
    config = CircuitBreaker(window=4, min_calls=2, exclude=(InsufficientFunds,))
    exc = validation_error() if error == "validation" else error
    assert isinstance(exc, BaseException)
    outcome = config.classify(exc, 0.1)
    state = feed(config, BreakerState(), [outcome] * 50, now=0.0)
    assert state == BreakerState()


def test_the_rest_of_a_batch_after_opening_is_not_recorded() -> None:
    config = CircuitBreaker(window=4, min_calls=2, failure_rate=1.0)
    state = feed(config, BreakerState(), [F, F, S, S], now=0.0)
    assert state.state is State.OPEN
    assert state.window == (F, F)


# -- open --------------------------------------------------------------------------------


def test_open_refuses_reading_until_open_for_has_passed() -> None:
    config = CircuitBreaker(window=2, min_calls=2, open_for=30.0)
    state = opened(config, now=10.0)
    permit = b.may_read(config, state, now=20.0)
    assert (permit.allowed, permit.retry_in) == (False, 20.0)
    after, permit = b.acquire(config, state, now=39.9, lease_ttl=5.0)
    assert (after, permit.allowed) == (state, False)
    assert feed(config, state, [S, S], now=25.0) == state  # stragglers change nothing


def test_open_turns_half_open_after_open_for() -> None:
    config = CircuitBreaker(window=2, min_calls=2, open_for=30.0, half_open_calls=2)
    state = opened(config, now=10.0)
    assert b.may_read(config, state, now=40.0) == b.Permit(State.HALF_OPEN, True, 2)
    state, permit = b.acquire(config, state, now=40.0, lease_ttl=5.0)
    assert state.state is State.HALF_OPEN
    assert (permit.allowed, permit.probes, permit.lease) == (True, 2, "1")


# -- half-open ---------------------------------------------------------------------------


def half_open(config: CircuitBreaker) -> BreakerState:
    state = opened(config, now=0.0)
    return replace(state, state=State.HALF_OPEN)


def test_half_open_grants_exactly_half_open_calls_probes_fleet_wide() -> None:
    config = CircuitBreaker(window=2, min_calls=2, half_open_calls=3)
    state = half_open(config)
    state, first = b.acquire(config, state, now=100.0, lease_ttl=10.0, want=2)
    state, second = b.acquire(config, state, now=100.0, lease_ttl=10.0, want=2)
    state, third = b.acquire(config, state, now=100.0, lease_ttl=10.0)
    assert (first.probes, second.probes) == (2, 1)
    assert (third.allowed, third.probes, third.retry_in) == (False, 0, 10.0)
    assert state.probes_granted == 3


def test_all_probes_succeeding_closes_with_an_empty_window() -> None:
    config = CircuitBreaker(window=2, min_calls=2, half_open_calls=2)
    state, permit = b.acquire(config, half_open(config), now=100.0, lease_ttl=10.0)
    state = feed(config, state, [S], now=101.0, lease=permit.lease)
    assert state.state is State.HALF_OPEN
    assert state.probe_calls == 1
    state, permit = b.acquire(config, state, now=101.0, lease_ttl=10.0)
    assert permit.probes == 1  # the unused permit came back with the released lease
    state = feed(config, state, [S], now=102.0, lease=permit.lease)
    assert state == BreakerState(lease_seq=2)


def test_a_failed_probe_reopens_for_open_for() -> None:
    config = CircuitBreaker(window=2, min_calls=2, half_open_calls=3, open_for=30.0)
    state, permit = b.acquire(config, half_open(config), now=100.0, lease_ttl=10.0)
    state = feed(config, state, [S, F, S], now=105.0, lease=permit.lease)
    assert (state.state, state.opened_at, state.open_until) == (State.OPEN, 105.0, 135.0)
    assert (state.leases, state.probe_calls) == ((), 0)


def test_slow_probes_reopen_when_the_slow_rate_is_reached() -> None:
    config = CircuitBreaker(window=2, min_calls=2, half_open_calls=1, slow_call_rate=1.0)
    state, permit = b.acquire(config, half_open(config), now=100.0, lease_ttl=10.0)
    state = feed(config, state, [SS], now=101.0, lease=permit.lease)
    assert state.state is State.OPEN


def test_outcomes_without_a_live_lease_are_not_probes() -> None:
    config = CircuitBreaker(window=2, min_calls=2, half_open_calls=1)
    state, _ = b.acquire(config, half_open(config), now=100.0, lease_ttl=10.0)
    assert feed(config, state, [S, F], now=101.0) == state  # stragglers from before opening
    assert feed(config, state, [F], now=101.0, lease="999") == state


def test_a_lease_counts_at_most_its_permits() -> None:
    config = CircuitBreaker(window=2, min_calls=2, half_open_calls=2)
    state, permit = b.acquire(config, half_open(config), now=100.0, lease_ttl=10.0, want=1)
    state = feed(config, state, [S, F, F], now=101.0, lease=permit.lease)
    assert (state.state, state.probe_calls, state.leases) == (State.HALF_OPEN, 1, ())


def test_an_ignored_probe_gives_its_permit_back() -> None:
    config = CircuitBreaker(window=2, min_calls=2, half_open_calls=1)
    state, permit = b.acquire(config, half_open(config), now=100.0, lease_ttl=10.0)
    state = feed(config, state, [IG], now=101.0, lease=permit.lease)
    assert (state.state, state.probe_calls) == (State.HALF_OPEN, 0)
    assert b.acquire(config, state, now=101.0, lease_ttl=10.0)[1].probes == 1


def test_an_expired_lease_is_reclaimed_so_a_dead_prober_does_not_stick() -> None:
    config = CircuitBreaker(window=2, min_calls=2, half_open_calls=1)
    state, dead = b.acquire(config, half_open(config), now=100.0, lease_ttl=10.0)
    state, refused = b.acquire(config, state, now=109.0, lease_ttl=10.0)
    assert (refused.allowed, refused.retry_in) == (False, 1.0)
    state, permit = b.acquire(config, state, now=110.0, lease_ttl=10.0)
    assert (permit.allowed, permit.lease) == (True, "2")
    late = feed(config, state, [S], now=111.0, lease=dead.lease)  # the dead prober's lease
    assert late == state
    assert feed(config, state, [S], now=111.0, lease=permit.lease).state is State.CLOSED


def test_a_renewed_lease_outlives_its_ttl_and_keeps_its_permits() -> None:
    config = CircuitBreaker(window=2, min_calls=2, half_open_calls=1)
    state, probe = b.acquire(config, half_open(config), now=100.0, lease_ttl=10.0)
    assert probe.lease is not None
    for now in (103.0, 106.0, 109.0, 112.0):
        state, renewed = b.renew(state, probe.lease, now, lease_ttl=10.0)
        assert renewed
    state, other = b.acquire(config, state, now=115.0, lease_ttl=10.0)
    assert (other.allowed, other.retry_in) == (False, 7.0)
    assert feed(config, state, [S], now=116.0, lease=probe.lease).state is State.CLOSED


def test_a_lease_is_not_renewed_once_expired_nor_shortened() -> None:
    config = CircuitBreaker(window=2, min_calls=2, half_open_calls=1)
    state, probe = b.acquire(config, half_open(config), now=100.0, lease_ttl=10.0)
    assert probe.lease is not None
    same, renewed = b.renew(state, probe.lease, 101.0, lease_ttl=1.0)
    assert renewed and same.leases[0].expires_at == 110.0
    late, renewed = b.renew(state, probe.lease, 110.0, lease_ttl=10.0)
    assert not renewed and late == state
    closed = feed(config, state, [S], now=101.0, lease=probe.lease)
    assert b.renew(closed, probe.lease, 102.0, lease_ttl=10.0) == (closed, False)


# -- operators ---------------------------------------------------------------------------


def test_forced_open_stays_open_until_an_operator_closes_it() -> None:
    config = CircuitBreaker()
    state = b.force_open(BreakerState(), now=0.0)
    for now in (1.0, 1e9):
        after, permit = b.acquire(config, state, now=now, lease_ttl=10.0)
        assert (after, permit.allowed, permit.retry_in) == (state, False, None)
    assert feed(config, state, [F] * 20, now=5.0) == state
    assert b.force_close(state) == BreakerState()


def test_forced_open_for_a_while_then_half_open() -> None:
    config = CircuitBreaker(half_open_calls=1)
    state = b.force_open(BreakerState(), now=0.0, duration=60.0)
    assert b.may_read(config, state, now=59.0).retry_in == 1.0
    state, permit = b.acquire(config, state, now=60.0, lease_ttl=10.0)
    assert (state.state, permit.probes) == (State.HALF_OPEN, 1)


def test_close_empties_the_window() -> None:
    config = CircuitBreaker(window=4, min_calls=4)
    state = feed(config, BreakerState(), [F, F, S], now=0.0)
    state = b.force_close(state)
    assert state.window == ()
    assert feed(config, state, [F], now=1.0).state is State.CLOSED


def test_reset_forgets_everything_but_the_lease_counter() -> None:
    config = CircuitBreaker(window=2, min_calls=2)
    state, _ = b.acquire(config, half_open(config), now=100.0, lease_ttl=10.0)
    assert b.reset(state) == BreakerState(lease_seq=1)


def test_disabled_always_allows_and_records_nothing() -> None:
    config = CircuitBreaker(window=2, min_calls=2)
    state = b.disable(opened(config))
    assert b.may_read(config, state, now=0.0) == b.Permit(State.DISABLED, True)
    assert feed(config, state, [F] * 10, now=0.0) == state
    assert b.force_close(state).state is State.CLOSED


def test_snapshot_conversion() -> None:
    from queues.breaker_store import BreakerSnapshot, LeaseInfo

    snap = BreakerSnapshot("half_open", (0, 3), 1000, 2500, 1, 0, (LeaseInfo("7", 1, 3000),), 7)
    assert b.state_from_snapshot(snap) == BreakerState(
        State.HALF_OPEN, (S, SF), 1.0, 2.5, 1, 0, (b.Lease("7", 1, 3.0),), 7)
