"""``seawall status --watch``: messages per second by outcome, from the outcome counts of
two consecutive reports (pure: the reports are built here)."""

from __future__ import annotations

from workers.cli.status import rate_cell, rates, render
from workers.status import HandlerStatus, StatusReport


def report(**outcomes: dict[str, int]) -> StatusReport:
    return StatusReport(
        handlers=[HandlerStatus(name=name, stream="orders", pool="p", app="shop",
                                group=name, lag=0, pending=0, consumers=1, retry_pending=0,
                                delayed=0, dead_letters=0, outcomes=counts)
                  for name, counts in outcomes.items()],
        pools=[])


def test_rates_are_the_counts_gained_per_second() -> None:
    before = report(charge={"ok": 100, "retry": 4, "dead_letter": 1, "parked": 0})
    after = report(charge={"ok": 350, "retry": 9, "dead_letter": 1, "parked": 20})

    assert rates(before, after, 2.5) == {"charge": {"ok": 100.0, "retry": 2.0,
                                                    "dead_letter": 0.0, "parked": 8.0}}


def test_a_handler_new_in_the_second_report_has_no_rate_yet() -> None:
    assert rates(report(), report(charge={"ok": 5}), 1.0) == {}


def test_counts_that_went_down_give_no_negative_rate() -> None:
    # (Redis lost the outcome counts: a restart without persistence)
    assert rates(report(charge={"ok": 500}), report(charge={"ok": 3}), 1.0) == {
        "charge": {"ok": 0.0}}


def test_the_watch_table_shows_the_rates_by_outcome() -> None:
    after = report(charge={"ok": 350, "retry": 9, "dead_letter": 1, "parked": 20},
                   mail={"ok": 7})
    per_second = rates(report(charge={"ok": 100, "retry": 4, "dead_letter": 1, "parked": 0}),
                       after, 2.5)

    table = render(after, per_second)

    assert "MSGS/S OK/RETRY/DEAD" in table
    [charge] = [line for line in table.splitlines() if line.startswith("charge")]
    assert charge.endswith("100/2/0 +8 parked")
    [mail] = [line for line in table.splitlines() if line.startswith("mail")]
    assert mail.rstrip().endswith("-")
    assert "MSGS/S" not in render(after)
    assert rate_cell({"ok": 1234.5678, "retry": 0.25}) == "1234.6/0.2/0"
