"""The supervisor's observability: the pipes of its pool processes, the totals their
reports add up to, the stuck-process check, and (with ``--metrics-port``) the fleet sampler
and the HTTP server of ``/metrics``, ``/livez`` and ``/readyz``.

The supervisor's loop (its main thread) drives it: it opens a pipe for each process it
spawns, tells it of starts, exits and restarts, and waits on the pipes instead of sleeping
(:meth:`Hub.wait`). The HTTP server's threads read through :meth:`snapshot`,
:meth:`liveness` and :meth:`readiness`. One lock guards the totals; it is held for
microseconds (a report is a few hundred bytes, a snapshot a copy of a few dicts).
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from queues.connection import connect_sync
from workers.observability import health
from workers.observability.exporter import Snapshot
from workers.observability.fleet import FleetSampler
from workers.observability.server import MetricsServer
from workers.observability.totals import HandlerLabels, Totals
from workers.observability.wire import WireError, decode

log = logging.getLogger("seawall.supervisor")

PING_TIMEOUT = 0.5
"""Seconds ``/readyz`` waits for Redis's PONG."""
MAX_LINE = 1 << 20
"""A report longer than this is not one: the pipe's bytes are dropped up to the next line."""


@dataclass
class _Pipe:
    fd: int
    buffer: bytes = b""


class Hub:
    def __init__(self, *, app_path: str, redis_url: str,
                 handlers: Sequence[HandlerLabels] = (), port: int | None = None,
                 host: str = "0.0.0.0", stuck_after: float = health.STUCK_AFTER) -> None:
        self.app_path = app_path
        self.redis_url = redis_url
        self.port = port
        self.host = host
        self.stuck_after = stuck_after
        self.totals = Totals(handlers)
        self.ticked_at = time.monotonic()
        self.stopping = False
        self._lock = threading.Lock()
        self._pipes: dict[str, _Pipe] = {}
        self.sampler: FleetSampler | None = None
        self._server: MetricsServer | None = None
        self._ping: redis.Redis | None = None

    @property
    def counting(self) -> bool:
        """Whether pool processes count messages (someone may scrape them)."""
        return self.port is not None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Serve ``/metrics`` (and the probes) and start sampling Redis, if there is a port.
        Raises ``OSError`` if the port cannot be bound. Once is enough: later calls do
        nothing."""
        if self.port is None or self._server is not None:
            return
        server = MetricsServer(self, self.host, self.port)
        server.start()
        self._server = server
        self.port = server.port
        self.sampler = FleetSampler(self.redis_url, list(self.totals.handlers.values()))
        self.sampler.start()
        log.info("serving /metrics, /livez and /readyz",
                 extra={"host": self.host, "port": self.port})

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None
        if self.sampler is not None:
            self.sampler.stop()
        for label in list(self._pipes):
            self._close_pipe(label)
        if self._ping is not None:
            self._ping.close()

    # -- the supervisor's events -----------------------------------------------------------

    def open_pipe(self, label: str) -> int:
        """A new pipe for the process about to be spawned in slot ``label``; returns the
        write end, to pass to the child (and close here once it is spawned)."""
        self._close_pipe(label)
        read_fd, write_fd = os.pipe()
        flags = fcntl.fcntl(read_fd, fcntl.F_GETFL)
        fcntl.fcntl(read_fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self._pipes[label] = _Pipe(read_fd)
        return write_fd

    def started(self, label: str, pool: str, index: int, pid: int, failures: int) -> None:
        with self._lock:
            self.totals.started(label, pool, index, pid, time.monotonic(), failures)

    def exited(self, label: str, failures: int) -> None:
        """The slot's process is gone: take what it wrote before dying, then forget it."""
        pipe = self._pipes.get(label)
        if pipe is not None:
            self._read(label, pipe)
            self._close_pipe(label)
        with self._lock:
            self.totals.exited(label, failures)

    def restarted(self, pool: str) -> None:
        with self._lock:
            self.totals.restarted(pool)

    @property
    def reading(self) -> list[str]:
        """The slots whose pipe is open (their process has not closed its end)."""
        return sorted(self._pipes)

    def beat(self, now: float) -> None:
        """The supervisor's loop turned (``/livez``)."""
        self.ticked_at = now

    def stuck(self, now: float) -> list[tuple[str, str]]:
        """(label, why) of every slot whose process is stuck and not yet killed."""
        with self._lock:
            found = [(label, why) for label, view in self.totals.slots.items()
                     if (why := health.stuck(view, now, self.stuck_after)) is not None]
            for label, why in found:
                self.totals.slots[label].killed = why
        return found

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s, reading reports as they arrive."""
        pipes = list(self._pipes.items())
        if not pipes:
            time.sleep(timeout)
            return
        try:
            ready, _, _ = select.select([p.fd for _, p in pipes], [], [], timeout)
        except (OSError, ValueError):
            time.sleep(timeout)
            return
        for label, pipe in pipes:
            if pipe.fd in ready:
                self._read(label, pipe)

    def _read(self, label: str, pipe: _Pipe) -> None:
        chunks = [pipe.buffer]
        ended = False
        while True:
            try:
                chunk = os.read(pipe.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                ended = True
                break
            if not chunk:
                ended = True  # the child closed its end (it is stopping, or died)
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        *lines, pipe.buffer = data.split(b"\n")
        if len(pipe.buffer) > MAX_LINE:
            log.warning("dropping an overlong line from a pool process", extra={"slot": label})
            pipe.buffer = b""
        now = time.monotonic()
        for line in lines:
            if not line.strip():
                continue
            try:
                report = decode(line)
            except WireError as exc:
                log.warning("ignoring a line from a pool process that is not a report",
                            extra={"slot": label, "error": str(exc)})
                continue
            with self._lock:
                self.totals.add(label, report, now)
        if ended:
            # Stop selecting on it: an ended pipe is always "readable", and the supervisor's
            # loop would spin until the process is reaped.
            self._close_pipe(label)

    def _close_pipe(self, label: str) -> None:
        pipe = self._pipes.pop(label, None)
        if pipe is not None:
            try:
                os.close(pipe.fd)
            except OSError:
                pass

    # -- what the HTTP server asks ---------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            t = self.totals
            return Snapshot(
                processed=dict(t.processed),
                durations={k: list(v) for k, v in t.durations.items()},
                exceptions=dict(t.exceptions), transitions=dict(t.transitions),
                reconnects=dict(t.reconnects), restarts=dict(t.restarts),
                pools=t.per_pool(), breakers=t.breaker_states(),
                fleet=None if self.sampler is None else self.sampler.latest)

    def liveness(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            return health.liveness(list(self.totals.slots.values()),
                                   ticked_at=self.ticked_at, now=now)

    def ping_redis(self) -> str | None:
        """None if Redis answered PING within ``PING_TIMEOUT``, else why not."""
        try:
            if self._ping is None:
                self._ping = connect_sync(self.redis_url, timeout=PING_TIMEOUT)
            self._ping.ping()
        except (redis.RedisError, OSError, ValueError) as exc:
            return type(exc).__name__
        return None

    def readiness(self) -> list[str]:
        redis_error = self.ping_redis()
        now = time.monotonic()
        with self._lock:
            return health.readiness(list(self.totals.slots.values()),
                                    redis_error=redis_error, stopping=self.stopping, now=now)
