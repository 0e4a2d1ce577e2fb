"""``seawall demo``: the example shop, live, on this machine.

It runs ``seawall run examples.shop.app:app`` as a child process (the same supervisor and
pool processes a deployment runs, not a shortcut), publishes orders from a thread, and
redraws the ``seawall status`` table every second. After ``--duration`` it stops the
producer, gives the backlog up to ``--drain`` seconds, stops the workers the way a
deployment is stopped (SIGTERM, then the grace period) and prints a summary. If no Redis
answers and ``redis-server`` is installed, it runs a private one for the demo's lifetime.

The app and the producer are loaded by name, like ``seawall run`` loads any app, so the
framework never imports the example.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import click
import redis

from queues.connection import ENV_VAR, connect_sync, redact
from workers.app import App
from workers.cli.common import redis_url_option
from workers.cli.status import render
from workers.cli.table import render_table
from workers.demo_redis import PrivateRedis, answers, die_with_parent, redis_server_path
from workers.errors import ConfigError
from workers.loader import load_app
from workers.status import StatusReport, collect

SHOP = "examples.shop.app:app"
PRODUCER = "examples.shop.producer"
FRAME_SECONDS = 1.0


class _Producer(Protocol):
    published: int
    errors: int

    def run(self, stop: threading.Event, duration: float | None = None) -> int: ...


class _Stops:
    """Ctrl-C / SIGTERM requests: the first ends the demo cleanly, the second is passed on
    to the workers (cancel what still runs), as ``seawall run`` does."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.event.set()


@contextmanager
def _catching(stops: _Stops) -> Iterator[None]:
    previous = {sig: signal.signal(sig, stops) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class _Run:
    """What the demo knows about the run, for the live header and the summary."""

    app: App
    url: str
    client: redis.Redis
    rate: float
    duration: float
    started: float = field(default_factory=time.monotonic)
    dead_at_start: dict[str, int] = field(default_factory=dict)

    def shop_report(self) -> StatusReport:
        report = collect(self.client)
        return StatusReport([h for h in report.handlers if h.app == self.app.name],
                            [p for p in report.pools if p.app == self.app.name])

    def dead_letters(self) -> dict[str, int]:
        return {r.name: int(self.client.xlen(r.keys.dlq)) for r in self.app.records()}


def _backlog(report: StatusReport) -> int:
    """Messages read by nobody yet or still being handled (delayed retries not counted)."""
    return sum((h.lag or 0) + h.pending + h.retry_pending for h in report.handlers)


def _frame(run: _Run, producer: _Producer, phase: str) -> None:
    elapsed = time.monotonic() - run.started
    until = f"{run.duration:.0f}s" if run.duration else "Ctrl-C"
    try:
        table = render(run.shop_report())
    except redis.RedisError as exc:
        table = f"(status unavailable: {exc})"
    if sys.stdout.isatty():
        click.clear()
    else:
        click.echo()
    click.echo(f"seawall demo [{phase}] {elapsed:5.1f}s (until {until})  "
               f"published {producer.published} orders at {run.rate:g}/s  "
               f"redis {redact(run.url)}")
    click.echo(table)


def _worker_events(log_path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return events
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _summary(run: _Run, producer: _Producer, log_path: Path) -> str:
    events = _worker_events(log_path)
    handled_by_pool: Counter[str] = Counter()
    retries: Counter[str] = Counter()
    restarts: Counter[str] = Counter()
    for event in events:
        msg = event.get("msg")
        if msg == "pool stopped":
            handled_by_pool[str(event.get("pool"))] += int(event.get("handled") or 0)
        elif msg == "handler failed; retry scheduled":
            retries[str(event.get("handler"))] += 1
        elif msg == "pool process died; restarting":
            restarts[str(event.get("slot"))] += 1
    try:
        report = run.shop_report()
        dead_now = run.dead_letters()
    except redis.RedisError as exc:
        return f"summary unavailable: Redis stopped answering ({exc})"
    status = {h.name: h for h in report.handlers}
    rows = []
    for record in run.app.records():
        h = status.get(record.name)
        alone = len(run.app.handlers_of(record.pool)) == 1
        handled = str(handled_by_pool[record.pool]) if alone else "-"
        left = "-" if h is None else str((h.lag or 0) + h.pending + h.retry_pending)
        rows.append([record.name, record.pool, handled, str(retries[record.name]),
                     str(dead_now[record.name] - run.dead_at_start.get(record.name, 0)), left,
                     "-" if h is None else str(h.delayed)])
    elapsed = time.monotonic() - run.started
    lines = [
        f"published {producer.published} orders to 'orders' in {elapsed:.1f}s",
        render_table(["handler", "pool", "handled", "retries", "dead letters", "pending",
                      "delayed"], rows),
        "pending: left unread or unacked for the next run; delayed: retries not yet due",
    ]
    if restarts:
        lines.append("pool restarts: " + ", ".join(f"{s} x{n}" for s, n in restarts.items()))
    if producer.errors:
        lines.append(f"the producer could not reach Redis {producer.errors} time(s)")
    return "\n".join(lines)


def _stop_workers(child: subprocess.Popen[bytes], stops: _Stops, grace: float) -> int:
    """SIGTERM once (finish within the grace period); a second Ctrl-C sends it again
    (cancel now); if the workers are still there long after the grace period, SIGKILL."""
    sent = 1
    child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace + 15.0
    while time.monotonic() < deadline:
        try:
            return child.wait(0.1)
        except subprocess.TimeoutExpired:
            pass
        if stops.count > 1 and sent < 2:
            sent = 2
            click.echo("second stop request: cancelling running handlers", err=True)
            child.send_signal(signal.SIGTERM)
    click.echo("the workers did not stop in time; killing them", err=True)
    child.kill()
    return child.wait()


def _load_producer(app: App, rate: float) -> _Producer:
    module = importlib.import_module(PRODUCER)
    make: Callable[..., _Producer] = module.Producer
    return make(app, rate)


def _redis_for_demo(url: str) -> tuple[str, PrivateRedis | None]:
    if answers(url):
        return url, None
    if redis_server_path() is None:
        raise click.ClickException(
            f"no Redis answers at {redact(url)}, and redis-server is not installed to start "
            "one; start Redis or pass --redis-url")
    private = PrivateRedis()
    click.echo(f"no Redis answers at {redact(url)}: started a private redis-server on "
               f"127.0.0.1:{private.port} for this demo (no persistence; stopped at the end)")
    return private.url, private


@click.command()
@click.option("--duration", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Seconds to publish orders; 0 = until Ctrl-C.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=20.0,
              show_default=True, help="Orders published per second.")
@click.option("--drain", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="After publishing stops, wait up to this long for the backlog to empty.")
@click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds running handlers get to finish once the workers are told to stop.")
@redis_url_option
def demo(duration: float, rate: float, drain: float, grace: float,
         redis_url: str | None) -> None:
    """Run the example shop (every pool, and a producer) with a live status table."""
    try:
        app = load_app(SHOP)
    except ConfigError as exc:
        raise click.ClickException(f"cannot load the example shop: {exc}") from None
    url, private = _redis_for_demo(app.url(redis_url))
    os.environ[ENV_VAR] = url  # for this process's producer and for the workers
    log_dir = Path(tempfile.mkdtemp(prefix="seawall-demo-"))
    log_path = log_dir / "workers.log"
    stops = _Stops()
    code = 1
    try:
        with _catching(stops), connect_sync(url) as client:
            run = _Run(app, url, client, rate, duration)
            run.dead_at_start = run.dead_letters()
            code = _run_demo(run, stops, log_path, drain, grace)
    finally:
        app.close()
        if private is not None:
            private.stop()
            click.echo("stopped the private redis-server (its data is gone)")
    sys.exit(code)


def _run_demo(run: _Run, stops: _Stops, log_path: Path, drain: float, grace: float) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "workers", "run", SHOP, "--grace", str(grace)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            # Ctrl-C reaches the demo only, which stops the workers in order.
            start_new_session=True, preexec_fn=die_with_parent)
    try:
        return _watch(run, child, stops, log_path, drain, grace)
    finally:
        if child.poll() is None:  # the demo itself failed: do not leave workers behind
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(grace + 15.0)
            except subprocess.TimeoutExpired:
                child.kill()


def _watch(run: _Run, child: subprocess.Popen[bytes], stops: _Stops, log_path: Path,
           drain: float, grace: float) -> int:
    click.echo(f"started `seawall run {SHOP}` (pid {child.pid}); worker logs: {log_path}")
    producer = _load_producer(run.app, run.rate)
    producing = threading.Event()
    thread = threading.Thread(target=producer.run, args=(producing,), name="demo-producer",
                              daemon=True)
    thread.start()
    died: int | None = None
    phase = "running"
    drain_until: float | None = None
    while died is None:
        _frame(run, producer, phase)
        stops.event.wait(FRAME_SECONDS)
        died = child.poll()
        now = time.monotonic()
        if stops.count:
            break
        if phase == "running" and run.duration and now - run.started >= run.duration:
            phase, drain_until = "draining", now + drain
            producing.set()
        if drain_until is not None and (now >= drain_until or _backlog(run.shop_report()) == 0):
            break
    producing.set()
    thread.join(5.0)
    if died is not None:
        click.echo(f"the workers exited early (exit code {died}); their log: {log_path}",
                   err=True)
        click.echo(_tail(log_path), err=True)
        return 1
    click.echo(f"\nstopping the workers (SIGTERM; grace period {grace:g}s)")
    exit_code = _stop_workers(child, stops, grace)
    click.echo(_summary(run, producer, log_path))
    click.echo(f"worker logs: {log_path}")
    if exit_code != 0:
        click.echo(f"the workers exited with code {exit_code}", err=True)
        return 1
    return 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
