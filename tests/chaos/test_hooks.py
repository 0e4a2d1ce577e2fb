"""The runtime's hooks the chaos scenarios use: ``SEAWALL_INSTANCE`` (two supervisors of
one app on one host get consumer names of their own) and ``SEAWALL_CLOCK_OFFSET`` (a pool
process with its wall clock skewed)."""

from __future__ import annotations

import time

import pytest

from workers.runtime.pool import CLOCK_OFFSET_ENV, INSTANCE_ENV, apply_clock_offset, consumer_name


def test_an_instance_name_gives_consumer_names_of_their_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INSTANCE_ENV, raising=False)
    plain = consumer_name("shop", "payments", 0, host="h1")
    assert plain == "shop:payments:h1:0"
    monkeypatch.setenv(INSTANCE_ENV, "b")
    other = consumer_name("shop", "payments", 0, host="h1")
    assert other == "shop:payments:h1/b:0"
    assert other == consumer_name("shop", "payments", 0, host="h1")  # stable across restarts


def test_the_clock_offset_moves_wall_time_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", time.time)  # (restored after the test)
    monkeypatch.setenv(CLOCK_OFFSET_ENV, "30")
    before_wall, before_mono = time.time(), time.monotonic()
    assert apply_clock_offset() == 30.0
    assert time.time() - before_wall >= 29.9
    assert time.monotonic() - before_mono < 5


def test_no_offset_leaves_the_clock_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", time.time)
    monkeypatch.delenv(CLOCK_OFFSET_ENV, raising=False)
    real = time.time
    assert apply_clock_offset() == 0.0
    assert time.time is real
