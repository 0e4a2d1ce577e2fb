"""One chaos run's world: a redis-server of its own (append-only, fsynced at every write),
the fault proxy in front of it, ``seawall run`` supervisors of the chaos app whose pools
reach Redis through the proxy (or directly), a producer under steady load, and the count
of where every message ended up.

The handlers record what they did in the *witness*: a second redis-server of the run's own
that no fault touches, never in the Redis under test, so that no fault can lose the record.
A message is *lost* when some handler neither ran it, nor holds it pending, delayed, unread, waiting
on its retry stream, nor has it as a dead letter; a saga is lost when its ledger is not in
the final state its order calls for.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from e2e.failure_helpers import DurableRedis

from chaos.chaos_app import (
    HANDLERS,
    SAGA_EVERY,
    SAGA_STEPS,
    SIDE_EVERY,
    SIDE_HANDLERS,
    Msg,
    Names,
    Order,
    build,
    declined,
)
from chaos.proxy import FaultProxy
from queues import producer, saga_store
from queues.envelope import encode

REPO = Path(__file__).resolve().parents[2]


def scale() -> float:
    """``SEAWALL_CHAOS_SCALE``: durations of faults and load are multiplied by it (CI runs
    a bounded form below 1; the soak runs 1 or more)."""
    return float(os.environ.get("SEAWALL_CHAOS_SCALE", "1"))


@dataclass
class Row:
    """One scenario's line of the table."""

    scenario: str
    messages: int = 0
    """Load messages published plus sagas started."""
    handled: int = 0
    """Load messages every handler completed, plus sagas in their final state."""
    dead: int = 0
    """Load messages left as dead letters (a scenario that replays them leaves none)."""
    duplicates: int = 0
    """Runs of a handler beyond the first for one message (at-least-once redeliveries)."""
    absorbed: int = 0
    """Redeliveries the ``idempotent=True`` handler skipped."""
    waiting: int = 0
    """Still pending, delayed or unread when the count was made (none once settled)."""
    lost: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, other: Row) -> None:
        for name in ("messages", "handled", "dead", "duplicates", "absorbed", "waiting",
                     "lost", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.notes += other.notes


HEADER = ("scenario", "messages", "handled", "dead-lettered", "duplicates seen",
          "absorbed (idempotent)", "waiting", "lost", "seconds")


def table(rows: list[Row]) -> str:
    """A Markdown table of ``rows``."""
    cells = [HEADER] + [(r.scenario, str(r.messages), str(r.handled), str(r.dead),
                         str(r.duplicates), str(r.absorbed), str(r.waiting), str(r.lost),
                         f"{r.seconds:.0f}") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(HEADER))) + " |"
             for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# -- processes -------------------------------------------------------------------------

def _entry_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms), int(seq or 0)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.append(int(entry))
    return out


@dataclass
class Supervisor:
    popen: subprocess.Popen[bytes]
    log: Path
    via_proxy: bool

    def pools(self) -> list[int]:
        return _children(self.popen.pid) if self.popen.poll() is None else []

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# -- the producer ----------------------------------------------------------------------

class Producer:
    """Publishes ``rate`` load messages a second (and one saga per ``SAGA_EVERY``) straight
    to Redis, not through the proxy, until stopped. A batch that fails is sent again with
    the same message ids until it is confirmed, so ``published`` is exact."""

    def __init__(self, world: World, rate: float) -> None:
        self.world = world
        self.rate = rate
        self.published = 0
        self.sagas = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-producer", daemon=True)

    def start(self) -> Producer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def _send(self, client: redis.Redis, batch: list[dict[str, str | bytes]],
              side: list[dict[str, str | bytes]], sagas: list[int]) -> None:
        names = self.world.names
        while True:
            try:
                producer.publish_many(client, names.load, batch)
                if side:
                    producer.publish_many(client, names.side, side)
                for n in sagas:
                    first, fields, deadline_ms, now_ms = self.world.saga._start_args(
                        Order(n=n), f"s{n}", None)
                    saga_store.start_sync(client, self.world.saga.runtime.layout,
                                          saga_id=f"s{n}", first_stream=first, fields=fields,
                                          deadline_ms=deadline_ms, now_ms=now_ms)
                return
            except (redis.RedisError, OSError):
                self.failures += 1
                time.sleep(0.2)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.world.redis.url, socket_timeout=5,
                                      socket_connect_timeout=2)
        tick = 0.05
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * self.rate)
                if due <= self.published:
                    time.sleep(tick)
                    continue
                end = min(due, self.published + 500)
                numbers = range(self.published, end)
                batch = [encode(Msg(n=n), message_id=f"m{n}") for n in numbers]
                side = [fields for n, fields in zip(numbers, batch, strict=True)
                        if n % SIDE_EVERY == 0]
                sagas = [n for n in numbers if n % SAGA_EVERY == 0]
                self._send(client, batch, side, sagas)
                self.published = end
                self.sagas += len(sagas)
        finally:
            client.close()


# -- the world -------------------------------------------------------------------------

class World:
    """``with World(directory, "name") as world:`` a run of its own, removed at the end."""

    def __init__(self, directory: Path, scenario: str, *, claim_after: float = 10.0,
                 processes: int = 2, saga_deadline: float = 300.0,
                 fsync_always: bool = False) -> None:
        self.directory = directory
        self.scenario = scenario
        self.names = Names(f"c{uuid.uuid4().hex[:8]}")
        self.app, self.saga = build(self.names.prefix)
        self.claim_after = claim_after
        self.processes = processes
        self.saga_deadline = saga_deadline
        self.fsync_always = fsync_always
        """Keep ``appendfsync always`` (the Redis restart scenario); others fsync every
        second, which the faults they make never test, for a load the machine can carry."""
        self.redis = DurableRedis(directory)
        (directory / "witness").mkdir(exist_ok=True)
        self.witness_server = DurableRedis(directory / "witness")
        self.proxy = FaultProxy(self.redis.port)
        self.witness = redis.Redis.from_url(self.witness_server.url)
        self.supervisors: list[Supervisor] = []
        self.producer: Producer | None = None
        self.started = time.monotonic()
        self.rng = random.Random()

    # -- life ------------------------------------------------------------------------------

    def __enter__(self) -> World:
        self.redis.start()
        self.witness_server.start()
        self.witness.config_set("appendfsync", "no")
        if not self.fsync_always:
            with self.client() as client:
                client.config_set("appendfsync", "everysec")
        self.proxy.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.producer is not None:
            self.producer.stop()
        for sup in self.supervisors:
            if sup.popen.poll() is None:
                sup.popen.send_signal(signal.SIGTERM)
        for sup in self.supervisors:
            try:
                sup.popen.wait(20)
            except subprocess.TimeoutExpired:
                pass
        for sup in self.supervisors:
            for pid in sup.pools():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if sup.popen.poll() is None:
                sup.popen.kill()
                sup.popen.wait(10)
        self.proxy.stop()
        self.redis.kill()
        self.witness.close()
        self.witness_server.kill()
        self.app.close()

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SEAWALL_REDIS_URL"}
        env.update(
            PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
            PYTHONUNBUFFERED="1", CHAOS_PREFIX=self.names.prefix,
            CHAOS_WITNESS=self.witness_server.url,
            CHAOS_CLAIM_AFTER=str(self.claim_after), CHAOS_PROCESSES=str(self.processes),
            CHAOS_SAGA_DEADLINE=str(self.saga_deadline), SEAWALL_LOG_LEVEL="WARNING")
        env.update(extra)
        return env

    def supervise(self, *, via_proxy: bool = True, **env: str) -> Supervisor:
        """``seawall run`` the chaos app, its pools reaching Redis through the proxy."""
        url = self.proxy.url() if via_proxy else self.redis.url
        log = self.directory / f"supervisor-{len(self.supervisors)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "workers", "run", "chaos.chaos_app:app",
                 "--redis-url", url, "--grace", "5"],
                cwd=self.directory, env=self.env(**env), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        sup = Supervisor(popen, log, via_proxy)
        self.supervisors.append(sup)
        return sup

    def wait_pools(self, count: int, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while sum(len(s.pools()) for s in self.supervisors) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} pool processes did not start:\n"
                                     + "\n".join(s.tail() for s in self.supervisors))
            time.sleep(0.1)

    def wait_consuming(self, within: float = 60.0) -> None:
        """Wait until both pools ran messages (they are connected and reading)."""
        deadline = time.monotonic() + within
        while not (self.handled("plain") and self.handled("reserve")):
            if time.monotonic() > deadline:
                raise AssertionError("the pools handle nothing:\n" + self.diagnostics())
            time.sleep(0.1)

    def pool_pids(self) -> list[int]:
        return [pid for s in self.supervisors for pid in s.pools()]

    def start_load(self, rate: float) -> Producer:
        self.producer = Producer(self, rate).start()
        return self.producer

    def stop_load(self) -> None:
        if self.producer is not None:
            self.producer.stop()

    def set_flag(self, name: str, up: bool) -> None:
        key = self.names.witness(f"flag:{name}")
        if up:
            self.witness.set(key, 1)
        else:
            self.witness.delete(key)

    def client(self) -> redis.Redis:
        """A client of the Redis under test, straight (not through the proxy)."""
        return redis.Redis.from_url(self.redis.url, socket_timeout=10)

    # -- counting --------------------------------------------------------------------------

    def _runs(self, what: str) -> dict[int, int]:
        raw = self.witness.hgetall(self.names.witness(f"runs:{what}"))
        return {int(k): int(v) for k, v in raw.items()}

    def handled(self, short: str) -> int:
        """How many messages handler ``short`` ran so far."""
        return int(self.witness.hlen(self.names.witness(f"runs:{short}")))

    def _dead(self, client: redis.Redis, short: str) -> set[int]:
        keys = self.app.handlers[self.names.handler(short)].keys
        out = set()
        for _, fields in client.xrange(keys.dlq):
            with contextlib.suppress(KeyError, ValueError):
                out.add(int(json.loads(fields[b"payload"])["n"]))
        return out

    def _saga_states(self, client: redis.Redis, count: int) -> dict[int, str]:
        numbers = range(0, count * SAGA_EVERY, SAGA_EVERY)
        with client.pipeline(transaction=False) as pipe:
            for n in numbers:
                pipe.hget(self.saga.keys.ledger(f"s{n}"), "state")
            replies = pipe.execute()
        return {n: (raw.decode() if raw else "missing")
                for n, raw in zip(numbers, replies, strict=True)}

    def expected(self, short: str) -> set[int]:
        """The messages handler ``short`` must see."""
        assert self.producer is not None
        every = SIDE_EVERY if short in SIDE_HANDLERS else 1
        return set(range(0, self.producer.published, every))

    def settled(self) -> bool:
        """Every message run by every handler (or a dead letter), every saga final."""
        assert self.producer is not None
        with self.client() as client:
            for short in HANDLERS:
                keys = self.app.handlers[self.names.handler(short)].keys
                # (cheap counts first: the sets are only compared once the counts agree)
                if self.handled(short) + client.xlen(keys.dlq) < len(self.expected(short)):
                    return False
            for short in HANDLERS:
                done = set(self._runs(short)) | self._dead(client, short)
                if self.expected(short) - done:
                    return False
            counts = saga_store.counts_sync(client, self.saga.keys)
            if counts.get("completed", 0) + counts.get("compensated", 0) < self.producer.sagas:
                return False
            states = self._saga_states(client, self.producer.sagas)
        return all(s in ("completed", "compensated") for s in states.values())

    def settle(self, within: float) -> bool:
        """Wait until :meth:`settled` (True) or ``within`` seconds passed (False)."""
        deadline = time.monotonic() + within
        while not self.settled():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def count(self) -> Row:
        """Where every message and saga is: the scenario's row."""
        assert self.producer is not None
        published, sagas = self.producer.published, self.producer.sagas
        row = Row(self.scenario, messages=published + sagas,
                  seconds=time.monotonic() - self.started)
        every = set(range(published))
        lost: set[int] = set()
        dead: set[int] = set()
        waiting: set[int] = set()
        with self.client() as client:
            for short in HANDLERS:
                # Redis first, in one snapshot, then the witness: a message acked by the
                # time of the snapshot had its run recorded before its ack.
                its_dead, its_waiting = self._snapshot(client, short)
                runs = self._runs(short)
                row.duplicates += sum(c - 1 for c in runs.values() if c > 1)
                missing = self.expected(short) - set(runs) - its_dead - its_waiting
                if missing:
                    row.notes.append(f"{short}: lost {sorted(missing)[:10]}")
                every -= self.expected(short) - set(runs)
                dead |= its_dead
                waiting |= its_waiting - set(runs)
                lost |= missing
            states = self._saga_states(client, sagas)
        absorbed = self.witness.hgetall(self.names.witness("absorbed"))
        row.absorbed = sum(int(v) for v in absorbed.values())
        dead -= lost
        waiting -= lost | dead
        row.handled = len(every)
        row.dead = len(dead)
        row.waiting = len(waiting)
        row.lost = len(lost)
        steps = {step: self._runs(step) for step in SAGA_STEPS}
        for step_runs in steps.values():
            row.duplicates += sum(c - 1 for c in step_runs.values() if c > 1)
        finals = Counter(states.values())
        row.notes.append(f"sagas: {finals['completed']} completed, "
                         f"{finals['compensated']} compensated, "
                         f"{sagas - finals['completed'] - finals['compensated']} other")
        for n, state in states.items():
            want = "compensated" if declined(n) else "completed"
            if state == want:
                row.handled += 1
            elif state in ("running", "compensating"):
                row.waiting += 1
            else:
                row.lost += 1
                row.notes.append(f"saga s{n}: {state}, expected {want}")
        return row

    def _snapshot(self, client: redis.Redis, short: str) -> tuple[set[int], set[int]]:
        """(dead-lettered, waiting) messages of handler ``short``, read in one MULTI so that
        no message moving between places (stream, delayed set, retry stream, dead letters)
        is seen in none of them. Waiting: pending, unread, on the retry stream, delayed."""
        keys = self.app.handlers[self.names.handler(short)].keys
        streams = (keys.stream, keys.retry)
        with client.pipeline(transaction=True) as pipe:
            pipe.xrange(keys.dlq)
            for stream in streams:
                pipe.xinfo_groups(stream)
                pipe.xpending_range(stream, keys.group, min="-", max="+", count=10_000_000)
                pipe.xrange(stream)
            pipe.zrange(keys.delayed, 0, -1)
            replies = pipe.execute(raise_on_error=False)

        def number(fields: Any) -> int | None:
            try:
                return int(json.loads(fields[b"payload"])["n"])
            except (KeyError, TypeError, ValueError):
                return None

        dead = {n for _, f in replies[0] if (n := number(f)) is not None}
        waiting: set[int] = set()
        for i, _ in enumerate(streams):
            groups, pending, entries = replies[1 + 3 * i: 4 + 3 * i]
            if isinstance(entries, Exception):
                continue
            if isinstance(groups, Exception) or isinstance(pending, Exception):
                waiting |= {n for _, f in entries if (n := number(f)) is not None}
                continue
            group = {g["name"]: g for g in groups}.get(keys.group.encode())
            last = _entry_key(group["last-delivered-id"]) if group else (0, 0)
            held = {r["message_id"] for r in pending}
            for entry_id, fields in entries:
                if entry_id in held or _entry_key(entry_id) > last:
                    if (n := number(fields)) is not None:
                        waiting.add(n)
        for member in replies[-1] if not isinstance(replies[-1], Exception) else []:
            try:
                _, _, _, flat = json.loads(member)
                waiting.add(int(json.loads(dict(zip(flat[::2], flat[1::2],
                                                    strict=True))["payload"])["n"]))
            except (TypeError, ValueError, KeyError):
                continue
        return dead, waiting

    def diagnostics(self) -> str:
        return "\n".join(f"--- supervisor {i} ({'proxy' if s.via_proxy else 'direct'})\n"
                         f"{s.tail()}" for i, s in enumerate(self.supervisors))

