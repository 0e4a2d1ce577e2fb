"""A pool process's reports, in a pool running in the test's process against the real
Redis: given a pipe, it reports at once, then every second, and last when it stops, with
every settled message counted exactly once across the reports; without a pipe it counts
nothing (the in-process tests' pools, ``python -m workers.runtime.process`` alone)."""

from __future__ import annotations

import asyncio
import fcntl
import os

import pytest
from pydantic import BaseModel
from tenacity import stop_after_attempt

from e2e.failure_helpers import Lab, until
from workers import NonRetryable
from workers.observability.reporter import Reporter
from workers.observability.wire import ENV_FD, ENV_METRICS, Report, decode
from workers.runtime.pool import Pool

pytestmark = pytest.mark.slow


class Order(BaseModel):
    n: int


@pytest.fixture
def lab_pool() -> dict[str, int]:
    return {"concurrency": 4}


class PipeReader:
    """The supervisor's end of the pipe, read without blocking."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        flags = fcntl.fcntl(self.read_fd, fcntl.F_GETFL)
        fcntl.fcntl(self.read_fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.buffer = b""
        self.reports: list[Report] = []

    def read(self) -> list[Report]:
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        self.reports += [decode(line) for line in lines if line]
        return self.reports

    def close(self) -> None:
        os.close(self.read_fd)


async def test_a_pool_with_a_pipe_reports_every_message_once_and_last_when_it_stops(
        lab: Lab) -> None:
    orders, step = lab.stream("orders"), lab.name("step")

    @lab.app.handler(orders, name=step, stop=stop_after_attempt(1))
    async def handle(order: Order) -> None:
        if order.n % 4 == 0:
            raise NonRetryable("no")

    pipe = PipeReader()
    reporter = Reporter(pipe.write_fd, count_messages=True)
    pool = Pool(lab.app, lab.app.pools["default"], reporter=reporter)
    stop, cancel = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(pool.run(stop, cancel, 5.0))
    try:
        # Given a pool reporting on a pipe (its first report comes at once),
        first = await until(pipe.read, within=10, what="the first report")
        assert first[0].pid == os.getpid() and first[0].capacity == 4
        assert not first[0].final

        # when it handles 20 messages and stops,
        await lab.app.apublish_many(orders, [{"n": n} for n in range(20)])
        await until(lambda: sum(n for r in pipe.read() for h, _, k, n in r.processed
                                if k == "ok") >= 15, within=15, what="the ok counts")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    reports = pipe.read()
    pipe.close()

    # then across its reports every message was counted once, the last report says so,
    totals: dict[str, int] = {}
    for report in reports:
        for handler, stream, kind, n in report.processed:
            assert (handler, stream) == (step, orders)
            totals[kind] = totals.get(kind, 0) + n
    assert totals == {"ok": 15, "dead_letter": 5}
    assert sum(n for r in reports for h, t, n in r.exceptions if t == "NonRetryable") == 5
    assert sum(sum(r.durations[step][:-1]) for r in reports if step in r.durations) == 20
    assert reports[-1].final and [r.final for r in reports].count(True) == 1
    # and it read from Redis, and its loop was never blocked for long.
    assert all(r.read_age is not None for r in reports[1:])
    assert max(r.lag for r in reports) < 1.0


def test_a_pool_process_without_a_pipe_has_no_reporter() -> None:
    assert Reporter.from_env({}) is None
    assert Reporter.from_env({ENV_FD: "not a number"}) is None
    read_fd, write_fd = os.pipe()
    try:
        counting = Reporter.from_env({ENV_FD: str(write_fd), ENV_METRICS: "1"})
        heartbeat_only = Reporter.from_env({ENV_FD: str(write_fd)})
        assert counting is not None and counting.metrics is not None
        assert heartbeat_only is not None and heartbeat_only.metrics is None
    finally:
        os.close(read_fd)
        os.close(write_fd)
    closed = write_fd
    assert Reporter.from_env({ENV_FD: str(closed)}) is None
