"""The pure parts of ``seawall saga``: durations, ages, and how a ledger reads (the order
of its steps, the compensations still to run in each state). The commands themselves run
against real sagas in tests/sagas/test_saga_cli.py."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from workers.cli.main import cli
from workers.cli.saga import SagaView, format_age, parse_duration, render_view


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("0.5s", 0.5),
    (" 3m ", 180)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "1y", "m", "-5s", "2 h"])
def test_a_duration_without_its_unit_is_refused_naming_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="90s, 15m, 2h"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (-1, "0.0s"), (4.24, "4.2s"), (42.9, "42s"), (725, "12m05s"), (11_220, "3h07m"),
    (187_200, "2d04h")])
def test_ages(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def view(ledger: dict[str, str], stack: list[str], timeline: list[dict[str, str]] | None = None,
         undoable: tuple[str, ...] | None = ("charge", "reserve")) -> SagaView:
    return SagaView("checkout", "s1", {"started_at": "1000", "updated_at": "2000", **ledger},
                    timeline or [], stack, undoable)


def test_steps_come_in_the_order_the_timeline_names_them() -> None:
    v = view({"step:ship": "late", "step:charge": "committed", "at:charge": "1100",
              "memo:charge": '{"n":1}', "step:reserve": "failed", "error:reserve": "no"},
             ["charge"], [{"event": "committed", "step": "charge"},
                          {"event": "failed", "step": "reserve"}])
    assert [(s.step, s.status) for s in v.steps()] == [
        ("charge", "committed"), ("reserve", "failed"), ("ship", "late")]
    assert v.steps()[0].to_json()["memo"] == {"n": 1}
    assert v.steps()[1].to_json()["error"] == "no"


@pytest.mark.parametrize(("ledger", "stack", "pending"), [
    # running: what would be compensated, last committed first; ship has no compensation
    ({"state": "running"}, ["charge", "reserve", "ship"], ["reserve", "charge"]),
    # compensating: the one under way first
    ({"state": "compensating", "undoing": "reserve", "step:reserve": "compensating"},
     ["charge"], ["reserve", "charge"]),
    # ... but not once it is done (its ack and the next one's send are one script)
    ({"state": "timed_out", "undoing": "reserve", "step:reserve": "compensated"},
     ["charge"], ["charge"]),
    # failed: the compensation that failed, then the rest
    ({"state": "failed", "failed_step": "reserve", "step:reserve": "undo_failed"},
     ["charge"], ["reserve", "charge"]),
    ({"state": "completed"}, ["charge", "reserve"], []),
    ({"state": "compensated"}, [], []),
])
def test_compensations_still_to_run(ledger: dict[str, str], stack: list[str],
                                    pending: list[str]) -> None:
    assert view(ledger, stack).to_compensate() == pending


def test_an_unregistered_saga_type_lists_every_step_on_its_stack() -> None:
    assert view({"state": "running"}, ["charge", "ship"], undoable=None).to_compensate() == [
        "ship", "charge"]


def test_render_shows_times_from_the_start() -> None:
    v = view({"state": "running", "deadline_ms": "0", "step:charge": "committed",
              "at:charge": "1310"}, ["charge"],
             [{"event": "started", "step": "", "detail": "", "at": "1000"},
              {"event": "committed", "step": "charge", "detail": "", "at": "1310"}])
    text = render_view(v, now_ms=62_000)
    assert "state        running for 1m00s" in text
    assert "deadline     none" in text
    assert "+0.31s  committed  charge" in text
    assert text.endswith("compensations that would run if it stopped now (next first): charge")


def test_the_saga_group_is_a_seawall_command() -> None:
    result = CliRunner().invoke(cli, ["saga", "--help"])
    assert result.exit_code == 0
    for command in ("list", "show", "abort", "retry", "skip"):
        assert command in result.stdout
