"""Triage of entries taken over from a dead consumer (pure): delivered ``max_deliveries``
times already is poison (dead-lettered, not run); delivered at most once is fresh (run
together); in between is suspicious (run one at a time, least delivered first), so one
poison message cannot drag the messages fetched with it towards the limit."""

from __future__ import annotations

import itertools

import pytest

from queues.streams import PendingEntry
from workers.runtime.recovery import triage


def entries(*deliveries: int) -> list[PendingEntry]:
    """One pending entry per delivery count, ids ``1-0``, ``2-0``, ... in that order."""
    return [PendingEntry(f"{i}-0", "dead-consumer", 60_000, d)
            for i, d in enumerate(deliveries, start=1)]


def ids(items: list[PendingEntry]) -> list[str]:
    return [p.entry_id for p in items]


def test_nothing_pending_is_nothing_to_do() -> None:
    sorted_out = triage([], max_deliveries=5)

    assert (sorted_out.poison, sorted_out.fresh, sorted_out.suspicious) == ([], [], [])


def test_entries_delivered_once_are_fresh_and_keep_their_order() -> None:
    sorted_out = triage(entries(1, 1, 1), max_deliveries=5)

    assert sorted_out.fresh == ["1-0", "2-0", "3-0"]
    assert sorted_out.poison == [] and sorted_out.suspicious == []


def test_the_split_at_the_default_limit() -> None:
    # Given entries delivered 1 to 6 times, out of order, and a limit of 5 deliveries,
    pending = entries(3, 1, 5, 2, 6, 1, 4)

    sorted_out = triage(pending, max_deliveries=5)

    # then those delivered 5 times or more are poison, in the order listed,
    assert ids(sorted_out.poison) == ["3-0", "5-0"]
    assert [p.deliveries for p in sorted_out.poison] == [5, 6]
    # those delivered once are fresh, in the order listed,
    assert sorted_out.fresh == ["2-0", "6-0"]
    # and the rest run one at a time, least delivered first.
    assert [(p.entry_id, p.deliveries) for p in sorted_out.suspicious] == [
        ("4-0", 2), ("1-0", 3), ("7-0", 4)]


def test_equally_suspicious_entries_keep_the_order_they_were_listed_in() -> None:
    sorted_out = triage(entries(3, 2, 3, 2), max_deliveries=10)

    assert ids(sorted_out.suspicious) == ["2-0", "4-0", "1-0", "3-0"]


def test_with_max_deliveries_1_every_delivered_entry_is_poison() -> None:
    """One delivery allowed: an entry still pending after it crashed its process."""
    sorted_out = triage(entries(1, 2, 7), max_deliveries=1)

    assert ids(sorted_out.poison) == ["1-0", "2-0", "3-0"]
    assert sorted_out.fresh == [] and sorted_out.suspicious == []


def test_with_max_deliveries_2_nothing_is_suspicious() -> None:
    sorted_out = triage(entries(1, 2, 3, 1), max_deliveries=2)

    assert ids(sorted_out.poison) == ["2-0", "3-0"]
    assert sorted_out.fresh == ["1-0", "4-0"]
    assert sorted_out.suspicious == []


def test_the_last_delivery_allowed_is_still_run() -> None:
    sorted_out = triage(entries(4, 5), max_deliveries=5)

    assert ids(sorted_out.suspicious) == ["1-0"]
    assert ids(sorted_out.poison) == ["2-0"]


@pytest.mark.parametrize("max_deliveries", [1, 2, 3, 5, 16])
def test_every_entry_lands_in_exactly_one_group(max_deliveries: int) -> None:
    pending = entries(*[d for d, _ in itertools.product(range(1, 8), range(2))])

    sorted_out = triage(pending, max_deliveries)

    placed = ids(sorted_out.poison) + sorted_out.fresh + ids(sorted_out.suspicious)
    assert sorted(placed) == sorted(ids(pending))
    assert all(p.deliveries >= max_deliveries for p in sorted_out.poison)
    assert all(p.deliveries < max_deliveries for p in sorted_out.suspicious)
    counts = [p.deliveries for p in sorted_out.suspicious]
    assert counts == sorted(counts)


def test_triage_does_not_change_what_it_was_given() -> None:
    pending = entries(3, 1, 2)
    before = list(pending)

    triage(pending, max_deliveries=5)

    assert pending == before
