"""The supervisor's side of the pipes (``Hub``), with real pipes and no child process: the
reports a child writes, in pieces or all at once, reach the totals; a line that is not a
report is skipped; a pipe whose writer closed it is no longer waited on."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from workers.observability.hub import Hub
from workers.observability.totals import HandlerLabels
from workers.observability.wire import Report, encode

LABELS = [HandlerLabels("billing.charge", "orders", "payments")]


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub(app_path="shop:app", redis_url="redis://127.0.0.1:6379/0", handlers=LABELS)
    yield h
    h.close()


def ok(n: int) -> bytes:
    return encode(Report(pid=7, read_age=0.1, capacity=4,
                         processed=[("billing.charge", "orders", "ok", n)]))


def test_reports_reach_the_totals_even_in_pieces(hub: Hub) -> None:
    write_fd = hub.open_pipe("payments[0]")
    hub.started("payments[0]", "payments", 0, pid=7, failures=0)
    line = ok(5)
    os.write(write_fd, line[:10])
    hub.wait(0.01)
    os.write(write_fd, line[10:] + b"not a report\n" + ok(2))
    hub.wait(0.01)
    os.close(write_fd)

    snap = hub.snapshot()

    assert snap.processed[("orders", "billing.charge", "payments", "ok")] == 7
    assert snap.pools["payments"]["capacity"] == 4


def test_a_pipe_its_writer_closed_is_no_longer_waited_on(hub: Hub) -> None:
    write_fd = hub.open_pipe("payments[0]")
    hub.started("payments[0]", "payments", 0, pid=7, failures=0)
    os.write(write_fd, ok(1))
    os.close(write_fd)

    hub.wait(0.01)

    assert hub.reading == []
    assert hub.snapshot().processed[("orders", "billing.charge", "payments", "ok")] == 1
    hub.exited("payments[0]", failures=0)  # (the process is reaped later: nothing to read)


def test_what_a_dead_process_wrote_is_read_when_it_is_reaped(hub: Hub) -> None:
    write_fd = hub.open_pipe("payments[0]")
    hub.started("payments[0]", "payments", 0, pid=7, failures=0)
    os.write(write_fd, ok(3))
    os.close(write_fd)

    hub.exited("payments[0]", failures=1)

    assert hub.snapshot().processed[("orders", "billing.charge", "payments", "ok")] == 3
    assert hub.snapshot().pools["payments"]["processes"] == 0
