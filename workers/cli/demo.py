"""``seawall demo``: the example shop, live, on this machine.

It runs ``seawall run examples.shop.app:app`` as a child process (the same supervisor and
pool processes a deployment runs, not a shortcut), starts checkout sagas from a thread, and
redraws the ``seawall status`` table and the sagas' counts by state every second. The
shop's payment provider goes down for ``--outage-for`` seconds, ``--outage-at`` seconds
in, so that ``checkout.charge``'s circuit breaker opens (checkouts wait in the stream,
nothing is dead-lettered) and closes again once the provider is back; the checkouts that
waited longer than their ``--deadline`` are compensated (a charge that went through late is
refunded), the others complete. After ``--duration`` it stops the producer, gives the
backlog up to ``--drain`` seconds, stops the workers the way a deployment is stopped
(SIGTERM, then the grace period) and prints a summary. Everything in it is read from Redis,
as differences between the demo's start and its end, never from the workers' logs: the
sagas' indexes by state and their ledgers (``queues.saga_store``), the outcome counts the
pools keep (``queues.outcome_counts``), the dead letters (``queues.dead_letters``), every
breaker's transition log (``queues.breaker_store``) and the supervisor's restart counts
(``queues.restarts``). If no Redis answers and ``redis-server`` is installed, it runs a
private one for the demo's lifetime.

The app, its checkout saga and the producer are loaded by name, like ``seawall run`` loads
any app, so the framework never imports the example (nor ``sagas``: the demo reads a saga's
keys, ``queues.keys.SagaKeys``, from the object it loaded). The shop is not installed with
the framework: the demo runs it from a source checkout (the directory above the
``workers`` package), which it puts on the path of its own imports and of the workers it
starts.
"""

from __future__ import annotations

import asyncio
import importlib
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

import workers
from queues import breaker_store, outcome_counts, registry_store, restarts, saga_store
from queues.connection import ENV_VAR, answers, connect, connect_sync, redact, server_time_ms_sync
from queues.dead_letters import count_by_error_type
from queues.keys import SagaKeys
from workers.app import App
from workers.cli.common import redis_url_option
from workers.cli.private_redis import PrivateRedis, die_with_parent, redis_server_path
from workers.cli.status import render
from workers.cli.table import render_table
from workers.errors import ConfigError
from workers.loader import load_app
from workers.status import StatusReport, collect

SHOP = "examples.shop.app:app"
CHECKOUT = "examples.shop.app:checkout"
PRODUCER = "examples.shop.producer"
FRAME_SECONDS = 1.0
OUTAGE_START_VAR = "SHOP_PAYMENT_OUTAGE_START"
OUTAGE_SECONDS_VAR = "SHOP_PAYMENT_OUTAGE_SECONDS"
"""How the shop's pretend payment provider (``examples/shop/provider.py``) learns when to
be down: a Unix time and a length, so that every pool process agrees without asking."""
DEADLINE_VAR = "SHOP_CHECKOUT_DEADLINE"
"""Seconds a checkout may take before it is stopped and compensated; read by the shop's app
where sagas are started (here: the demo's producer thread)."""
IN_FLIGHT = ("running", "compensating", "timed_out")
"""Saga states that are not final: going forward, or being compensated (``timed_out``: its
deadline passed, it is being compensated)."""
SUMMARY_KINDS = (outcome_counts.OK, outcome_counts.RETRY, outcome_counts.FALLBACK,
                 outcome_counts.PARKED)
"""The summary's columns of settled outcomes: handled, retries, fallbacks, parked; then
"gave up": dead letters and saga steps' aborts, given up for good either way."""
GAVE_UP = (outcome_counts.DEAD_LETTER, outcome_counts.ABORTED)


def source_root() -> Path:
    """The checkout holding ``workers/`` and ``examples/``: the directory above the
    installed ``workers`` package (an editable install points into the clone)."""
    return Path(workers.__file__).resolve().parent.parent


def _shop_root() -> Path:
    """The source checkout to run the shop from; exit 1 when the shop is not there (seawall
    was installed from a wheel or an sdist, which do not carry the example)."""
    root = source_root()
    if not (root / "examples" / "shop" / "app.py").is_file():
        raise click.ClickException(
            "`seawall demo` runs the example shop from a source checkout, and there is no "
            f"examples/shop/ beside the installed workers package (in {root}). Clone the "
            "repository and install it from there: `pip install -e .` in the clone.")
    return root


def _on_path(root: Path) -> dict[str, str]:
    """Put ``root`` first on this process's import path; the PYTHONPATH that gives the
    workers the same."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    inherited = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(root), *([inherited] if inherited else [])])}


class _Producer(Protocol):
    started: int
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
    saga: SagaKeys
    """The keys of the shop's checkout saga."""
    url: str
    client: redis.Redis
    rate: float
    duration: float
    outage_at: float = 0.0
    outage_for: float = 0.0
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    started_ms: int = 0
    """The Redis server's clock at the start: the clock of dead-letter ids and of breaker
    transitions."""
    outcomes_at_start: dict[str, dict[str, int]] = field(default_factory=dict)
    restarts_at_start: dict[str, int] = field(default_factory=dict)
    sagas_at_start: dict[str, int] = field(default_factory=dict)

    def mark_start(self) -> None:
        """Note the counts the summary subtracts (they only grow, across runs)."""
        self.started_ms = server_time_ms_sync(self.client)
        self.outcomes_at_start = outcome_counts.read_sync(self.client)
        self.restarts_at_start = restarts.read_restarts_sync(self.client)
        self.sagas_at_start = saga_store.counts_sync(self.client, self.saga)

    def sagas(self) -> dict[str, int]:
        """Checkout sagas by state, as differences from the start: every saga is in one
        state, so they add up to the sagas started since (a saga still running from an
        earlier run that finishes now moves one from running to its final state)."""
        now = saga_store.counts_sync(self.client, self.saga)
        return {state: n - self.sagas_at_start.get(state, 0) for state, n in now.items()}

    def stopped_by(self) -> Counter[str]:
        """The sagas compensated or failed since the start, by why they stopped going
        forward (their ledgers' cause and failed step)."""
        ended = saga_store.list_sync(self.client, self.saga, states=("compensated", "failed"),
                                     limit=1_000_000)
        why: Counter[str] = Counter()
        for entry in ended:
            if entry.since_ms < self.started_ms:
                continue
            ledger = saga_store.ledger_sync(self.client, self.saga, entry.saga_id)
            cause, step = ledger.get("cause", "?"), ledger.get("failed_step", "")
            why[f"{cause} at {step}" if step else cause] += 1
        return why

    def outage_env(self) -> dict[str, str]:
        if not self.outage_for:
            return {}
        return {OUTAGE_START_VAR: repr(self.started_wall + self.outage_at),
                OUTAGE_SECONDS_VAR: repr(self.outage_for)}

    def provider(self, elapsed: float) -> str:
        """The payment provider's state, for the live header."""
        if not self.outage_for:
            return "up"
        end = self.outage_at + self.outage_for
        if elapsed < self.outage_at:
            return f"up (outage at {self.outage_at:g}s)"
        if elapsed < end:
            return f"DOWN until {end:g}s"
        return "up again"

    def shop_report(self) -> StatusReport:
        report = collect(self.client)
        return StatusReport([h for h in report.handlers if h.app == self.app.name],
                            [p for p in report.pools if p.app == self.app.name])

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per handler, how many messages were settled so since the start, by kind."""
        now = outcome_counts.read_sync(self.client)
        out: dict[str, dict[str, int]] = {}
        for record in self.app.records():
            end, start = now.get(record.name, {}), self.outcomes_at_start.get(record.name, {})
            out[record.name] = {kind: end.get(kind, 0) - start.get(kind, 0)
                                for kind in outcome_counts.KINDS}
        return out

    def pool_restarts(self) -> dict[str, int]:
        """Pool restarts since the start, by pool (pools never restarted left out)."""
        now = restarts.read_restarts_sync(self.client)
        out = {pool: n - self.restarts_at_start.get(pool, 0) for pool, n in now.items()
               if pool in self.app.pools}
        return {pool: n for pool, n in out.items() if n > 0}

    def transitions(self) -> list[tuple[str, breaker_store.Transition]]:
        """Every breaker transition since the start, oldest first, with its handler."""
        found = [(record.name, t) for record in self.app.records()
                 if record.breaker is not None
                 for t in breaker_store.read_transitions_sync(self.client, record.keys,
                                                              since_ms=self.started_ms)]
        return sorted(found, key=lambda pair: (pair[1].at_ms, pair[1].entry_id))

    def dead_by_error(self) -> dict[tuple[str, str], int]:
        """Dead letters since the start, by handler and error type, read from the
        dead-letter streams."""

        async def count() -> dict[tuple[str, str], int]:
            client = connect(self.url)
            try:
                out: dict[tuple[str, str], int] = {}
                for record in self.app.records():
                    by_type = await count_by_error_type(client, dlq_key=record.keys.dlq,
                                                        since_ms=self.started_ms)
                    out.update({(record.name, error): n for error, n in by_type.items()})
                return out
            finally:
                await client.aclose()

        return asyncio.run(count())


def saga_line(counts: dict[str, int]) -> str:
    """The live frame's line of sagas by state."""
    return "checkout sagas: " + ", ".join(
        f"{counts.get(state, 0)} {state.replace('_', ' ')}" for state in saga_store.STATES)


def _backlog(report: StatusReport) -> int:
    """Messages read by nobody yet, still being handled, or waiting in a delayed set (a
    retry not yet due, or an order parked while the breaker was open)."""
    return sum((h.lag or 0) + h.pending + h.retry_pending + h.delayed
               for h in report.handlers)


def _drained(run: _Run) -> bool:
    """Nothing left to handle, and no checkout in flight."""
    return (_backlog(run.shop_report()) == 0
            and not any(run.sagas().get(state, 0) > 0 for state in IN_FLIGHT))


def _frame(run: _Run, producer: _Producer, phase: str) -> None:
    elapsed = time.monotonic() - run.started
    until = f"{run.duration:.0f}s" if run.duration else "Ctrl-C"
    try:
        table = render(run.shop_report())
        sagas = saga_line(run.sagas())
    except redis.RedisError as exc:
        table, sagas = f"(status unavailable: {exc})", ""
    if sys.stdout.isatty():
        click.clear()
    else:
        click.echo()
    click.echo(f"seawall demo [{phase}] {elapsed:5.1f}s (until {until})  "
               f"started {producer.started} checkouts at {run.rate:g}/s  "
               f"payment provider {run.provider(elapsed)}  redis {redact(run.url)}")
    click.echo(sagas)
    click.echo(table)


def breaker_transitions(run: _Run) -> list[str]:
    """One line per breaker transition since the demo started, from the breakers' logs in
    Redis (each transition is there once, whichever process caused it)."""
    lines = []
    for handler, t in run.transitions():
        at = (t.at_ms - run.started_ms) / 1000
        lines.append(f"  {at:5.1f}s  {handler}: {t.from_state} -> {t.to_state} "
                     f"({t.reason_text})")
    return lines


def _summary(run: _Run, producer: _Producer) -> str:
    try:
        report = run.shop_report()
        settled = run.outcomes()
        dead_by_error = run.dead_by_error()
        transitions = breaker_transitions(run)
        restarted = run.pool_restarts()
        sagas = run.sagas()
        stopped_by = run.stopped_by()
    except (redis.RedisError, OSError) as exc:
        return f"summary unavailable: Redis stopped answering ({exc})"
    status = {h.name: h for h in report.handlers}
    rows = []
    for record in run.app.records():
        h = status.get(record.name)
        left = "-" if h is None else str((h.lag or 0) + h.pending + h.retry_pending)
        counts = settled[record.name]
        rows.append([record.name, record.pool, *(str(counts[kind]) for kind in SUMMARY_KINDS),
                     str(sum(counts[kind] for kind in GAVE_UP)), left,
                     "-" if h is None else str(h.delayed)])
    elapsed = time.monotonic() - run.started
    in_flight = sum(sagas.get(state, 0) for state in IN_FLIGHT)
    lines = [
        f"started {producer.started} checkouts in {elapsed:.1f}s",
        render_table(["saga", "started", *saga_store.STATES],
                     [[run.saga.saga, str(sum(sagas.values())),
                       *(str(sagas.get(state, 0)) for state in saga_store.STATES)]]),
    ]
    if stopped_by:
        lines.append("compensated or failed, by cause: " + ", ".join(
            f"{why} x{n}" for why, n in sorted(stopped_by.items(), key=lambda p: -p[1])))
    if in_flight:
        lines.append(f"{in_flight} checkout(s) still in flight when the workers stopped: "
                     "the next run carries them on")
    lines += [
        "",
        render_table(["handler", "pool", "handled", "retries", "fallbacks", "parked",
                      "gave up", "pending", "delayed"], rows),
        "retries: retries scheduled; parked: put back to wait while the breaker was open;",
        "gave up: dead-lettered, or a saga step that aborted its saga (not a dead letter);",
        "pending: left unread or unacked for the next run; delayed: retries not yet due",
    ]
    if dead_by_error:
        lines.append("dead letters by error: " + ", ".join(
            f"{handler} {error} x{n}" for (handler, error), n in sorted(dead_by_error.items())))
    heading = "circuit breaker transitions:" if transitions else "no breaker changed state"
    if run.outage_for:
        end = run.outage_at + run.outage_for
        heading = f"payment provider down from {run.outage_at:g}s to {end:g}s; {heading}"
    if run.outage_for or transitions:
        lines.append(heading)
    lines.extend(transitions)
    if restarted:
        lines.append("pool restarts: " + ", ".join(
            f"{pool} x{n}" for pool, n in sorted(restarted.items())))
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


def _load_producer(checkout: Any, rate: float) -> _Producer:
    module = importlib.import_module(PRODUCER)
    make: Callable[..., _Producer] = module.Producer
    return make(checkout, rate)


def _load_checkout() -> Any:
    """The shop's checkout saga, loaded by name (the framework does not import ``sagas``)."""
    module_name, _, attribute = CHECKOUT.partition(":")
    checkout = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(getattr(checkout, "keys", None), SagaKeys):
        raise click.ClickException(f"{CHECKOUT} is not a saga")
    return checkout


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
@click.option("--outage-at", type=click.FloatRange(min=0), default=4.0, show_default=True,
              help="Seconds into the demo when the payment provider goes down.")
@click.option("--outage-for", type=click.FloatRange(min=0), default=6.0, show_default=True,
              help="Seconds the payment provider stays down; 0 = no outage.")
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True), default=8.0,
              show_default=True,
              help="Seconds a checkout may take before it is stopped and compensated.")
@redis_url_option
def demo(duration: float, rate: float, drain: float, grace: float, outage_at: float,
         outage_for: float, deadline: float, redis_url: str | None) -> None:
    """Run the example shop (every pool, and a producer starting checkout sagas) with a
    live status table; its payment provider goes down for a while, to show the circuit
    breaker at work and checkouts compensated when they wait past their deadline."""
    shop_path = _on_path(_shop_root())
    os.environ[DEADLINE_VAR] = repr(deadline)  # read where the checkouts start: here
    try:
        app = load_app(SHOP)
        checkout = _load_checkout()
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
            run = _Run(app, checkout.keys, url, client, rate, duration, outage_at,
                       outage_for)
            run.mark_start()
            code = _run_demo(run, checkout, stops, log_path, drain, grace, shop_path)
    finally:
        app.close()
        if private is not None:
            private.stop()
            click.echo("stopped the private redis-server (its data is gone)")
    sys.exit(code)


def _run_demo(run: _Run, checkout: Any, stops: _Stops, log_path: Path, drain: float,
              grace: float, shop_path: dict[str, str]) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **shop_path, **run.outage_env())
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "workers", "run", SHOP, "--grace", str(grace)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            # Ctrl-C reaches the demo only, which stops the workers in order.
            start_new_session=True, preexec_fn=die_with_parent)
    try:
        return _watch(run, checkout, child, stops, log_path, drain, grace)
    finally:
        if child.poll() is None:  # the demo itself failed: do not leave workers behind
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(grace + 15.0)
            except subprocess.TimeoutExpired:
                child.kill()


def _watch(run: _Run, checkout: Any, child: subprocess.Popen[bytes], stops: _Stops,
           log_path: Path, drain: float, grace: float) -> int:
    click.echo(f"started `seawall run {SHOP}` (pid {child.pid}); worker logs: {log_path}")
    click.echo("waiting for a process of every pool to start reading")
    if not _wait_for_workers(run, child, stops):
        click.echo(f"the workers' pools did not all start within {WORKERS_START_WAIT:g}s; "
                   "starting anyway", err=True)
    producer = _load_producer(checkout, run.rate)
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
        if drain_until is not None and (now >= drain_until or _drained(run)):
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
    click.echo(_summary(run, producer))
    click.echo(f"worker logs: {log_path}")
    if exit_code != 0:
        click.echo(f"the workers exited with code {exit_code}", err=True)
        return 1
    return 0


WORKERS_START_WAIT = 60.0
"""Seconds the demo waits for a process of every pool before it starts the clock anyway."""


def _wait_for_workers(run: _Run, child: subprocess.Popen[bytes], stops: _Stops) -> bool:
    """Wait until every pool of the shop has a process reading (its heartbeat is in Redis),
    before the first checkout is published.

    On a slow machine the workers take seconds to import: a short demo would otherwise
    publish checkouts nobody reads yet, and stop the workers with SIGTERM before they could
    even install their handler for it (they would die instead of draining)."""
    pools = {record.pool for record in run.app.records()}
    deadline = time.monotonic() + WORKERS_START_WAIT
    while time.monotonic() < deadline and child.poll() is None and not stops.count:
        beats = registry_store.read_heartbeats_sync(run.client)
        if pools <= {beat.get("pool") for beat in beats.values()}:
            return True
        stops.event.wait(0.1)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
