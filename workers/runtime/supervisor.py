"""The supervisor behind ``seawall run``: one OS process per pool slot, kept alive.

A pool process that dies is restarted with exponential backoff. Consumer names are stable
per (host, pool, slot), so the replacement takes over the dead process's pending entries
as soon as it starts instead of waiting for ``claim_after``. The first SIGTERM/SIGINT is
forwarded once (stop fetching, finish within the grace period); a second one is forwarded
again (cancel now). Pool processes run in their own sessions, so a terminal's Ctrl-C reaches
them only through here.

Each pool process gets a pipe to report on about once a second (``workers.observability``):
its heartbeat, and with ``--metrics-port`` its counts, which the supervisor adds up and
serves with ``/livez`` and ``/readyz``. A process that stops reporting (its event loop is
blocked) is killed and restarted like one that crashed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

import redis

from queues import restarts
from queues.connection import ENV_VAR, connect_sync
from workers.observability.health import STABLE_AFTER as STABLE_AFTER
from workers.observability.health import STUCK_AFTER
from workers.observability.hub import Hub
from workers.observability.totals import HandlerLabels
from workers.observability.wire import ENV_FD, ENV_METRICS

log = logging.getLogger("seawall.supervisor")

CONFIG_ERROR_EXIT = 2
# (STABLE_AFTER, from health: a process that ran this long before dying starts its backoff
# afresh; it is no longer part of a crash loop either, for /livez)
COUNT_TIMEOUT = 1.0
"""Longest wait for Redis when counting a restart: the supervisor must not hang on it."""


def restart_delay(failures: int) -> float:
    """0.5 s after the first crash, doubling, at most 30 s."""
    # (the exponent is capped: a pool crash-looping for days must not overflow a float)
    return float(min(30.0, 0.5 * 2 ** min(16, max(0, failures - 1))))


def next_failures(failures: int, ran: float) -> int:
    """Consecutive crashes after a process that ran ``ran`` seconds died: one that ran
    ``STABLE_AFTER`` seconds or more starts the backoff afresh."""
    return 1 if ran >= STABLE_AFTER else failures + 1


@dataclass
class Slot:
    pool: str
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.pool}[{self.index}]"


class Supervisor:
    def __init__(
        self,
        app_path: str,
        slots: dict[str, int],
        *,
        redis_url: str,
        grace: float = 30.0,
        concurrency: int | None = None,
        log_level: str = "INFO",
        handlers: Sequence[HandlerLabels] = (),
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
        stuck_after: float = STUCK_AFTER,
    ) -> None:
        self.app_path = app_path
        self.slots = [Slot(pool, i) for pool, n in slots.items() for i in range(n)]
        self.redis_url = redis_url
        self.grace = grace
        self.concurrency = concurrency
        self.log_level = log_level
        self.stop_requests = 0
        self._forwarded = 0
        self._client: redis.Redis | None = None
        self.hub = Hub(app_path=app_path, redis_url=redis_url, handlers=handlers,
                       port=metrics_port, host=metrics_host, stuck_after=stuck_after)

    def _command(self, slot: Slot) -> list[str]:
        cmd = [sys.executable, "-m", "workers.runtime.process", self.app_path, slot.pool,
               str(slot.index), "--grace", str(self.grace), "--log-level", self.log_level]
        if self.concurrency is not None:
            cmd += ["--concurrency", str(self.concurrency)]
        return cmd

    def _spawn(self, slot: Slot) -> None:
        env = dict(os.environ)
        env[ENV_VAR] = self.redis_url
        env.setdefault("PYTHONUNBUFFERED", "1")
        report_fd = self.hub.open_pipe(slot.label)
        env[ENV_FD] = str(report_fd)
        env[ENV_METRICS] = "1" if self.hub.counting else "0"
        try:
            slot.process = subprocess.Popen(self._command(slot), env=env,
                                            start_new_session=True, pass_fds=(report_fd,))
        finally:
            os.close(report_fd)
        slot.started_at = time.monotonic()
        slot.restart_at = None
        self.hub.started(slot.label, slot.pool, slot.index, slot.process.pid, slot.failures)
        log.info("pool process started", extra={"slot": slot.label, "pid": slot.process.pid})

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requests += 1

    def _forward(self, sig: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                try:
                    os.kill(slot.process.pid, sig)
                except ProcessLookupError:
                    pass

    def _count_restart(self, slot: Slot) -> None:
        """Count the restart in Redis (``seawall:restarts``), for ``status`` and the demo;
        a Redis that does not answer costs the count, never the restart."""
        try:
            if self._client is None:
                self._client = connect_sync(self.redis_url, timeout=COUNT_TIMEOUT)
            restarts.count_restart_sync(self._client, slot.pool)
        except (redis.RedisError, OSError, ValueError) as exc:
            log.warning("could not count the restart in Redis",
                        extra={"slot": slot.label, "error": str(exc)})

    def pids(self) -> dict[str, int]:
        return {s.label: s.process.pid for s in self.slots
                if s.process is not None and s.process.poll() is None}

    def run(self) -> int:
        """Run until stopped; 0 after a clean stop, 2 if a pool cannot even start."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.hub.start()
            for slot in self.slots:
                self._spawn(slot)
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.hub.close()
            if self._client is not None:
                self._client.close()

    def _loop(self) -> int:
        deadline: float | None = None
        while True:
            now = time.monotonic()
            self.hub.beat(now)
            if self.stop_requests > self._forwarded:
                self._forwarded += 1
                self.hub.stopping = True
                log.info("forwarding stop request to pool processes",
                         extra={"request": self._forwarded})
                self._forward(signal.SIGTERM)
                if deadline is None:
                    deadline = now + self.grace + 10.0
            stopping = self._forwarded > 0
            if not stopping:
                self._kill_stuck(now)
            alive = 0
            for slot in self.slots:
                if slot.process is None:
                    if not stopping and slot.restart_at is not None and now >= slot.restart_at:
                        self._spawn(slot)
                        alive += 1
                    continue
                code = slot.process.poll()
                if code is None:
                    alive += 1
                    continue
                slot.exits.append(code)
                slot.process = None
                self.hub.exited(slot.label, slot.failures)
                if stopping:
                    continue
                if code == CONFIG_ERROR_EXIT:
                    log.error("pool process cannot start (configuration error); stopping",
                              extra={"slot": slot.label})
                    self.stop_requests += 1
                    self._forward(signal.SIGTERM)
                    self._wait_all(self.grace)
                    return CONFIG_ERROR_EXIT
                ran = now - slot.started_at
                slot.failures = next_failures(slot.failures, ran)
                delay = restart_delay(slot.failures)
                slot.restart_at = now + delay
                log.error("pool process died; restarting", extra={
                    "slot": slot.label, "exit_code": code, "ran_s": round(ran, 1),
                    "restart_in": delay})
                self._count_restart(slot)
                self.hub.restarted(slot.pool)
            if stopping and alive == 0:
                log.info("all pool processes stopped")
                return 0
            if deadline is not None and now > deadline:
                log.error("pool processes did not stop in time; killing them")
                self._forward(signal.SIGKILL)
                self._wait_all(5.0)
                return 0
            self.hub.wait(0.05)

    def _kill_stuck(self, now: float) -> None:
        """SIGKILL every pool process whose event loop is stuck; the restart path then runs
        as for a crash (its pending entries are taken back by its successor)."""
        by_label = {slot.label: slot for slot in self.slots}
        for label, why in self.hub.stuck(now):
            slot = by_label.get(label)
            if slot is None or slot.process is None:
                continue
            log.error("pool process stuck; killing it", extra={
                "slot": label, "pid": slot.process.pid, "reason": why})
            try:
                slot.process.kill()
            except ProcessLookupError:
                pass

    def _wait_all(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for slot in self.slots:
            if slot.process is not None:
                try:
                    slot.process.wait(max(0.0, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    slot.process.kill()
