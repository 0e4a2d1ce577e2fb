"""The pool process's side of the supervisor's pipe: a heartbeat with its counts, about once
a second.

A task on the pool's event loop wakes every quarter second and measures how late it woke
(the loop's lag: a handler that blocks the loop shows here, and by the silence of the
pipe). Every second it sends a :class:`~workers.observability.wire.Report`: the lag, how
long ago a fetch loop last read from Redis, the bulkhead's statistics, the breaker states
its gates heard, and the counts since the last report. Writes go through an asyncio pipe
transport (never blocking the loop); while the supervisor has not taken the last report,
no new counts are taken, so none are lost or sent twice. The last report goes out when
the pool stops, after its last acks were confirmed.

A pool run without a supervisor (``python -m workers.runtime.process`` alone, the
in-process tests) has no pipe: no reporter, no counting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from workers.observability.counting import MessageMetrics
from workers.observability.wire import ENV_FD, ENV_METRICS, Report, encode

if TYPE_CHECKING:
    from workers.runtime.pool import Pool

log = logging.getLogger("seawall.reporter")

REPORT_EVERY = 1.0
TICK = 0.25
"""Seconds between the lag measurements (the loop's wake-ups)."""
CLOSE_WAIT = 1.0
"""Longest wait for the last report to leave when the pool stops."""


class Reporter:
    """Sends one pool process's reports to its supervisor."""

    def __init__(self, fd: int, *, count_messages: bool = True) -> None:
        self.fd = fd
        self.metrics: MessageMetrics | None = MessageMetrics() if count_messages else None
        """The observer counting messages (None: heartbeats only)."""
        self._transport: asyncio.WriteTransport | None = None
        self._pipe = _Pipe()
        self._lag = 0.0
        self._reconnects_sent = 0
        self._broken = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Reporter | None:
        """The reporter of a pool process whose supervisor made it a pipe, else None."""
        env = os.environ if env is None else env
        raw = env.get(ENV_FD)
        if not raw:
            return None
        try:
            fd = int(raw)
            os.fstat(fd)
        except (ValueError, OSError):
            log.warning("no usable telemetry pipe; not reporting", extra={"fd": raw})
            return None
        return cls(fd, count_messages=env.get(ENV_METRICS) == "1")

    async def _open(self) -> asyncio.WriteTransport | None:
        if self._transport is None and not self._broken:
            loop = asyncio.get_running_loop()
            pipe = os.fdopen(self.fd, "wb", buffering=0)
            transport, _ = await loop.connect_write_pipe(lambda: self._pipe, pipe)
            # Told (pause/resume) whenever anything waits in the buffer, and when it left.
            transport.set_write_buffer_limits(high=0, low=0)
            self._transport = transport
        return self._transport

    def report(self, pool: Pool, *, final: bool = False) -> Report:
        """The report to send now; takes the counts (they are sent with it)."""
        capacity = pool.statistics().capacity
        # (fetched and not yet settled: the limiter's count also holds the slots that a
        # blocking read has taken for the batch it may get)
        in_flight = sum(c.in_flight.outstanding for c in pool.consumers)
        now = time.monotonic()
        report = Report(
            pid=os.getpid(), lag=self._lag,
            read_age=None if not pool.last_read else max(0.0, now - pool.last_read),
            saturated=in_flight >= capacity, in_flight=in_flight, capacity=capacity,
            final=final)
        self._lag = 0.0
        streams = {c.name: c.keys.stream for c in pool.consumers}
        for c in pool.consumers:
            gate = c.gate
            if gate is None:
                continue
            if gate.heard:
                report.breakers[c.name] = gate.state
            heard = gate.take_transitions()
            report.transitions += [(c.name, a, b, n) for (a, b), n in heard.items()]
        if self.metrics is not None:
            deltas = self.metrics.take_deltas()
            report.processed = [(h, streams.get(h, ""), kind, n)
                                for (h, kind), n in deltas.processed.items()]
            report.durations = deltas.durations
            report.exceptions = [(h, t, n) for (h, t), n in deltas.exceptions.items()]
        waits = pool.reconnect_waits
        report.reconnects, self._reconnects_sent = waits - self._reconnects_sent, waits
        return report

    def _send(self, transport: asyncio.WriteTransport, pool: Pool, *, final: bool) -> None:
        if transport.is_closing():
            self._broken = True
            return
        if transport.get_write_buffer_size():
            return  # the supervisor has not read the last one: keep counting meanwhile
        transport.write(encode(self.report(pool, final=final)))

    async def run(self, pool: Pool) -> None:
        """Measure the loop's lag and report every second, until cancelled."""
        loop = asyncio.get_running_loop()
        transport = await self._open()
        if transport is None:
            return
        self._send(transport, pool, final=False)  # "running": the supervisor's first word
        next_report = loop.time() + REPORT_EVERY
        while not self._broken:
            woke = loop.time() + TICK
            await asyncio.sleep(TICK)
            now = loop.time()
            self._lag = max(self._lag, now - woke)
            if now >= next_report:
                next_report = now + REPORT_EVERY
                try:
                    self._send(transport, pool, final=False)
                except Exception:
                    # A bug here must not crash the pool (its loops are watched).
                    log.exception("could not report to the supervisor")

    async def close(self, pool: Pool) -> None:
        """Send the last report (counts up to the last confirmed acks) and close the pipe."""
        transport = self._transport
        if transport is None or self._broken:
            return
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                await self._pipe.drained.wait()
                self._send(transport, pool, final=True)
                await asyncio.sleep(0)
                await self._pipe.drained.wait()
        except TimeoutError:
            log.warning("the supervisor did not take the last report")
        finally:
            transport.close()
            self._transport = None


class _Pipe(asyncio.Protocol):
    """The pipe's protocol: knows whether the last write has left. (A supervisor that went
    away is noticed by the process's parent watcher.)"""

    def __init__(self) -> None:
        self.drained = asyncio.Event()
        self.drained.set()

    def pause_writing(self) -> None:
        self.drained.clear()

    def resume_writing(self) -> None:
        self.drained.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.drained.set()
