"""The chaos scenarios, one function each, shared by ``tests/chaos`` (a bounded form, scaled
down by ``SEAWALL_CHAOS_SCALE``) and ``bench/soak.py`` (in rotation, for as long as asked).

Each runs the chaos app (``chaos.chaos_app``) under a steady load from a producer, makes
its faults, heals them, stops the load, waits until every message is accounted for, and
returns its :class:`~chaos.world.Row`: messages, handled, dead-lettered, duplicates seen,
duplicates absorbed by the idempotent handler, still waiting, lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from chaos.world import Row, World, scale
from queues import breaker_store
from queues.breaker_store import HALF_OPEN

SETTLE = float(os.environ.get("SEAWALL_CHAOS_SETTLE", "240"))
"""Seconds a scenario waits, after its faults, for every message to be accounted for."""


def rate() -> float:
    """Load messages a second (``SEAWALL_CHAOS_RATE``; the soak raises it)."""
    return float(os.environ.get("SEAWALL_CHAOS_RATE", "50"))


def _finish(world: World, started: float) -> Row:
    world.stop_load()
    world.proxy.heal()
    settled = world.settle(SETTLE)
    row = world.count()
    row.seconds = time.monotonic() - started
    if not settled:
        row.notes.append(f"did not settle within {SETTLE:.0f}s:\n" + world.diagnostics())
    return row


def _run(directory: Path, name: str, faults: Callable[[World, Row], None], *,
         supervisors: tuple[dict[str, str], ...] = ({},), direct: tuple[bool, ...] = (),
         warmup: float = 2.0, **options: object) -> Row:
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    with World(directory, name, **options) as world:  # type: ignore[arg-type]
        for i, env in enumerate(supervisors):
            via_proxy = not (i < len(direct) and direct[i])
            world.supervise(via_proxy=via_proxy, **env)
        world.wait_pools(len(supervisors) * (world.processes + 1))
        world.start_load(rate())
        world.wait_consuming()
        time.sleep(warmup)
        row = Row(name)
        faults(world, row)
        result = _finish(world, started)
        result.notes = row.notes + result.notes
        return result


# -- (1) a random pool process SIGKILLed about every second ------------------------------

def kill_pools(directory: Path) -> Row:
    """A random pool process of the app is SIGKILLed about every second for ``60 s x
    scale``; the supervisor restarts each (with its backoff), and the replacement takes
    its predecessor's pending entries."""

    def faults(world: World, row: Row) -> None:
        end = time.monotonic() + 60 * scale()
        kills = 0
        while time.monotonic() < end:
            pids = world.pool_pids()
            if pids:
                try:
                    os.kill(world.rng.choice(pids), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
            time.sleep(world.rng.uniform(0.7, 1.3))
        row.notes.append(f"{kills} pool processes killed")

    return _run(directory, "SIGKILL a pool process every ~1 s", faults)


# -- (2) Redis stopped and restarted twice ------------------------------------------------

def restart_redis(directory: Path) -> Row:
    """Redis (append-only, fsync at every write) stopped and started again twice: once
    with SIGTERM, once with SIGKILL, each down for a few seconds, under load."""

    def faults(world: World, row: Row) -> None:
        for how in ("stop", "kill"):
            time.sleep(max(2.0, 8 * scale()))
            if how == "stop":
                world.redis.stop()
            else:
                world.redis.kill()
            time.sleep(max(1.0, 3 * scale()))
            world.redis.start(timeout=120)
        row.notes.append(f"producer retried {world.producer.failures if world.producer else 0}"
                         " batches")

    return _run(directory, "Redis restarted twice (AOF, fsync always)", faults,
                fsync_always=True)


# -- (3) partitions, one longer than claim_after ------------------------------------------

def partitions(directory: Path) -> Row:
    """Two supervisors of one app, one behind the proxy, one reaching Redis directly. The
    proxied one is cut off for 5 s, then for longer than ``claim_after`` (10 s): the other
    takes over the entries it held, and when the partition heals its late acks and the
    other's runs meet (duplicates, never losses)."""
    claim_after = 10.0

    def faults(world: World, row: Row) -> None:
        world.proxy.partition(5.0)
        time.sleep(5.0 + max(2.0, 5 * scale()))
        long = max(claim_after + 2.0, 30 * scale())
        world.proxy.partition(long)
        time.sleep(long + max(2.0, 5 * scale()))
        row.notes.append(f"partitions of 5 s and {long:.0f}s, claim_after {claim_after:.0f}s")

    return _run(directory, "partitions of 5 s and > claim_after", faults,
                supervisors=({"SEAWALL_INSTANCE": "a"}, {"SEAWALL_INSTANCE": "b"}),
                direct=(False, True), claim_after=claim_after)


# -- (4) half-open connections -------------------------------------------------------------

def half_open(directory: Path) -> Row:
    """Every connection the pools hold goes silent (the proxy keeps it open and forwards
    nothing; TCP keepalive is answered by the proxy's kernel): the pools must notice by
    their own timeouts, open new connections and carry on. Twice."""

    def faults(world: World, row: Row) -> None:
        for _ in range(2):
            before = world.proxy.connections
            silenced = world.proxy.half_open()
            handled = world.handled("plain")
            time.sleep(max(20.0, 40 * scale()))
            row.notes.append(f"{silenced} connections went silent; then "
                             f"{world.proxy.connections - before} new connections, "
                             f"{world.handled('plain') - handled} messages handled")

    return _run(directory, "half-open connections", faults)


# -- (5) partitions during a DLQ replay, a breaker probe, a saga's compensation -----------

def _replay(world: World, rate: float, *, cut_after: float | None = None) -> int:
    """``seawall dlq replay --all --rate RATE`` of the flaky handler through the proxy;
    with ``cut_after``, a 3 s partition that many seconds into it. Returns its exit code."""
    handler = world.names.handler("flaky")
    process = subprocess.Popen(
        [sys.executable, "-m", "workers", "dlq", "replay", "-H", handler, "--all", "-y",
         "--rate", str(rate), "--redis-url", world.proxy.url()],
        env=world.env(), cwd=world.directory, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        if cut_after is not None:
            time.sleep(cut_after)
            world.proxy.partition(3.0)
        return process.wait(180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def partition_during_operations(directory: Path) -> Row:
    """A partition (between the pools and the CLI on one side, Redis on the other) while
    ``seawall dlq replay`` runs, while the breaker lets its half-open probe through, and
    while sagas compensate (every fourth order saga does, all the time, under the load)."""

    def faults(world: World, row: Row) -> None:
        began = time.monotonic()
        flaky = world.app.handlers[world.names.handler("flaky")].keys
        guarded = world.app.handlers[world.names.handler("guarded")].keys
        # Dead letters to replay: the flaky handler rejects everything for a while.
        world.set_flag("reject", True)
        time.sleep(max(3.0, 10 * scale()))
        with world.client() as client:
            deadline = time.monotonic() + 60
            while client.xlen(flaky.dlq) < 10 and time.monotonic() < deadline:
                time.sleep(0.2)
            world.set_flag("reject", False)
            dead = client.xlen(flaky.dlq)
        row.notes.append(f"{dead} dead letters to replay")
        # Replay through the proxy; cut it off a moment after it starts; run it again
        # until nothing is left (a replay cut off half-way leaves each entry either
        # replayed or still a dead letter).
        runs, codes = 0, []
        while True:
            runs += 1
            # (slow enough to last about 6 s: the partition lands in the middle of it)
            codes.append(_replay(world, max(2.0, dead / 6), cut_after=2.0 if runs == 1
                                 else None))
            with world.client() as client:
                if client.xlen(flaky.dlq) == 0 or runs >= 20:
                    break
            time.sleep(1.0)
        row.notes.append(f"dlq replay cut off 2 s in, run {runs} times (exit codes "
                         f"{codes}), {time.monotonic() - began:.0f}s in")
        # The breaker: its dependency fails until it opens; partition when it goes
        # half-open and lets its probe through. The dependency comes back slow (a second
        # a call): a probe that succeeds at once is half-open for a few milliseconds, too
        # short a moment to be seen reliably and partitioned.
        world.set_flag("down", True)
        caught = False
        with world.client() as client:
            deadline = time.monotonic() + 60
            while breaker_store.read_state_sync(client, guarded).state != "open":
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            world.set_flag("slow", True)
            world.set_flag("down", False)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if breaker_store.read_state_sync(client, guarded).state == HALF_OPEN:
                    world.proxy.partition(3.0)
                    caught = True
                    break
                time.sleep(0.01)
        world.set_flag("slow", False)
        row.notes.append(("partition during the half-open probe" if caught
                          else "the half-open state was not seen")
                         + f", {time.monotonic() - began:.0f}s in")
        time.sleep(4.0)
        # Sagas compensate all along: one more partition, under the load.
        world.proxy.partition(3.0)
        time.sleep(3.0 + max(2.0, 5 * scale()))

    return _run(directory, "partition during replay, probe, compensation", faults)


# -- (6) two supervisors, one with its clock 30 s ahead -----------------------------------

def clock_skew(directory: Path) -> Row:
    """Two supervisors of one app, the second with its wall clock 30 s ahead
    (``SEAWALL_CLOCK_OFFSET``): delayed retries scheduled and moved by both, the breaker
    opened and closed by both (it runs on Redis's clock), sagas with a deadline of 120 s or more
    checked by both (the skewed one must not expire sagas that are on time)."""

    def faults(world: World, row: Row) -> None:
        time.sleep(max(3.0, 15 * scale()))
        world.set_flag("down", True)
        time.sleep(3.0)
        world.set_flag("down", False)
        time.sleep(max(5.0, 20 * scale()))
        guarded = world.app.handlers[world.names.handler("guarded")].keys
        with world.client() as client:
            moves = breaker_store.read_transitions_sync(client, guarded)
        row.notes.append(f"breaker transitions: {[(t.from_state, t.to_state) for t in moves]}")

    return _run(directory, "two supervisors, one clock +30 s", faults,
                supervisors=({"SEAWALL_INSTANCE": "a"},
                             {"SEAWALL_INSTANCE": "b", "SEAWALL_CLOCK_OFFSET": "30"}),
                saga_deadline=max(120.0, 300 * scale()))


SCENARIOS: dict[str, Callable[[Path], Row]] = {
    "kill": kill_pools,
    "restart": restart_redis,
    "partition": partitions,
    "half_open": half_open,
    "operations": partition_during_operations,
    "clock_skew": clock_skew,
}
"""Every scenario by a short name, in the order the soak runs them."""
