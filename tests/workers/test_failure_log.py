"""Failure logging stays readable under a flood (pure: an injected clock), and the cached
traceback text is the one Python would print."""

from __future__ import annotations

import logging
import traceback

import pytest
from pydantic import BaseModel, ValidationError

from workers.outcome import Outcome
from workers.runtime.settle import FULL_LINES, SUMMARY_EVERY, FailureLog, formatted_traceback


class Order(BaseModel):
    n: int


def test_a_flood_logs_the_first_few_in_full_then_a_count_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seawall.settle")
    failures = FailureLog("billing.charge")
    bad = Outcome.dead_letter(ValueError("bad"), "invalid payload")
    other = Outcome.dead_letter(KeyError("k"), "non-retryable")

    # Given 10,000 dead letters of one kind over 35 s and one of another kind,
    for i in range(10_000):
        failures.log(logging.ERROR, "message dead-lettered", bad, {"i": i},
                     now=i * 35 / 10_000)
    failures.log(logging.ERROR, "message dead-lettered", other, {}, now=35.0)

    # then the first few of each were logged in full, the rest as counts, one line per
    # interval, and the counts add up.
    full = [r for r in caplog.records if r.getMessage() == "message dead-lettered"]
    summaries = [r for r in caplog.records if "counted, not logged" in r.getMessage()]
    assert len(full) == FULL_LINES + 1
    assert len(summaries) == int(35 // SUMMARY_EVERY)
    assert all(r.levelno == logging.ERROR for r in caplog.records)
    counted = sum(r.__dict__["count"] for r in summaries)
    assert FULL_LINES + counted <= 10_000
    assert 10_000 - FULL_LINES - counted < 10_000 * SUMMARY_EVERY / 35 + 1  # the tail


def _fail(payload: bytes) -> BaseException:
    try:
        Order.model_validate_json(payload)
    except ValidationError as exc:
        return exc
    raise AssertionError("must fail")


def test_the_cached_traceback_reads_as_pythons_own() -> None:
    for payload in (b'{"n": "x"}', b'{"m": 1}', b"not json"):
        error = _fail(payload)
        assert formatted_traceback(error) == "".join(traceback.format_exception(error))
    # chained exceptions are formatted whole
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as error:
        assert formatted_traceback(error) == "".join(traceback.format_exception(error))
