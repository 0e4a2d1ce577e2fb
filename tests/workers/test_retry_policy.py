"""The retry decision as a pure function: fixed clock values, no sleeping, no Redis."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError
from tenacity import (
    TryAgain,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
)

from queues.envelope import EnvelopeError
from workers.errors import ConfigError, HandlerTimeout, NonRetryable, Retry
from workers.retry import (
    DEFAULT_ATTEMPTS,
    Decision,
    GiveUp,
    RetryIn,
    RetryPolicy,
    decide,
    make_policy,
)

T0 = 1_700_000_000.0


def _decide(
    policy: RetryPolicy, attempt: int, error: BaseException, *, elapsed: float = 0.0
) -> Decision:
    return decide(policy, attempt=attempt, first_failed_at=T0, now=T0 + elapsed, error=error)


def test_attempts_are_counted_and_the_last_one_gives_up() -> None:
    policy = RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(7))

    assert _decide(policy, 1, ValueError("x")) == RetryIn(7.0)
    assert _decide(policy, 2, ValueError("x")) == RetryIn(7.0)
    outcome = _decide(policy, 3, ValueError("x"))

    assert isinstance(outcome, GiveUp)
    assert "attempts exhausted" in outcome.reason
    assert "3 attempts" in outcome.reason


def test_delays_grow_exponentially_with_the_attempt_number() -> None:
    policy = RetryPolicy(stop=stop_never, wait=wait_exponential(multiplier=1, max=30))

    delays = [_decide(policy, n, OSError()) for n in range(1, 8)]

    assert delays == [RetryIn(d) for d in (1, 2, 4, 8, 16, 30, 30)]


def test_stop_after_delay_counts_from_the_first_failure() -> None:
    policy = RetryPolicy(stop=stop_after_delay(60), wait=wait_fixed(5))

    assert _decide(policy, 9, OSError(), elapsed=59.0) == RetryIn(5.0)
    outcome = _decide(policy, 10, OSError(), elapsed=60.0)

    assert isinstance(outcome, GiveUp)
    assert "in 60s" in outcome.reason


def test_a_clock_behind_the_first_failure_does_not_count_negative_time() -> None:
    policy = RetryPolicy(stop=stop_after_delay(60), wait=wait_fixed(1))

    assert _decide(policy, 2, OSError(), elapsed=-500.0) == RetryIn(1.0)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 10])
def test_jitter_stays_within_its_bounds(attempt: int) -> None:
    policy = RetryPolicy(stop=stop_never, wait=wait_exponential_jitter(max=20, jitter=3))
    low = min(2 ** (attempt - 1), 20)
    high = min(2 ** (attempt - 1) + 3, 20)

    for _ in range(200):
        outcome = _decide(policy, attempt, OSError())
        assert isinstance(outcome, RetryIn)
        assert low <= outcome.delay <= high


def test_the_default_policy_retries_with_backoff_then_gives_up() -> None:
    policy = make_policy()

    first = _decide(policy, 1, RuntimeError("boom"))
    assert isinstance(first, RetryIn)
    assert 1.0 <= first.delay <= 2.0
    fourth = _decide(policy, DEFAULT_ATTEMPTS - 1, RuntimeError("boom"))
    assert isinstance(fourth, RetryIn)
    assert 8.0 <= fourth.delay <= 9.0
    assert isinstance(_decide(policy, DEFAULT_ATTEMPTS, RuntimeError("boom")), GiveUp)


def test_a_handler_timeout_is_retried_by_default() -> None:
    assert isinstance(_decide(make_policy(), 1, HandlerTimeout("slow")), RetryIn)


def test_retry_with_a_delay_overrides_the_wait() -> None:
    policy = RetryPolicy(stop=stop_after_attempt(5), wait=wait_fixed(100))

    assert _decide(policy, 1, Retry(delay=2.5)) == RetryIn(2.5)
    assert _decide(policy, 1, Retry()) == RetryIn(100.0)


def test_retry_is_honoured_even_for_errors_the_filter_would_not_retry() -> None:
    policy = RetryPolicy(retry=retry_if_exception_type(ConnectionError), wait=wait_fixed(3))

    assert _decide(policy, 1, Retry(delay=0)) == RetryIn(0.0)
    assert _decide(policy, 1, TryAgain()) == RetryIn(3.0)


def test_retry_still_obeys_stop() -> None:
    policy = RetryPolicy(stop=stop_after_attempt(2))

    outcome = _decide(policy, 2, Retry(delay=1))

    assert isinstance(outcome, GiveUp)
    assert "attempts exhausted" in outcome.reason


def test_non_retryable_gives_up_at_once() -> None:
    outcome = _decide(RetryPolicy(stop=stop_never), 1, NonRetryable("card declined"))

    assert isinstance(outcome, GiveUp)
    assert "NonRetryable" in outcome.reason


class Order(BaseModel):
    quantity: int


def test_validation_errors_and_broken_envelopes_give_up_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate({"quantity": "many"})

    assert isinstance(_decide(make_policy(), 1, caught.value), GiveUp)
    assert isinstance(_decide(make_policy(), 1, EnvelopeError("no payload")), GiveUp)


def test_the_retry_filter_decides_which_errors_are_retried() -> None:
    policy = RetryPolicy(
        stop=stop_after_attempt(5), wait=wait_fixed(1),
        retry=retry_if_exception_type(ConnectionError),
    )

    assert _decide(policy, 1, ConnectionRefusedError()) == RetryIn(1.0)
    outcome = _decide(policy, 1, KeyError("sku"))
    assert isinstance(outcome, GiveUp)
    assert "KeyError" in outcome.reason


def test_strategies_combine_as_in_tenacity() -> None:
    policy = RetryPolicy(stop=stop_after_attempt(10) | stop_after_delay(30),
                         wait=wait_fixed(1) + wait_fixed(2))

    assert _decide(policy, 1, OSError()) == RetryIn(3.0)
    assert isinstance(_decide(policy, 2, OSError(), elapsed=31), GiveUp)


def test_a_policy_that_is_not_a_strategy_fails_at_registration_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"stop=stop_after_attempt\(5\)"):
        make_policy(stop=5)
