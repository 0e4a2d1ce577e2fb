"""How a saga's steps and compensations are settled: through the saga scripts
(``queues.saga_store``) instead of the plain ack, so that the ack, the saga's ledger and the
next event change together (one script, one slot). Batched: one script call per source
stream and ack flush, like the plain acks.

A step that returned commits (``saga_step.lua``): its memo, its place on the saga's stack,
its events; a step that failed for good turns the saga back (``saga_fail.lua``). A
compensation that returned sends the next one (``saga_undone.lua``); one that failed for
good leaves the saga failed (``saga_undo_failed.lua``). Retries, parking and skips go the
runtime's usual way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from queues import saga_store
from queues.keys import SagaKeys
from queues.saga_store import SagaLayout, StepDone, StepFailed, UndoFailed, Undone
from workers.errors import MessageRejected, StepAborted
from workers.integrity import Integrity
from workers.middleware import Call
from workers.outcome import Kind, Outcome
from workers.plugin import BackgroundLoop

if TYPE_CHECKING:
    from workers.runtime.settle import Settler

log = logging.getLogger("seawall.saga")

DEADLINE_SWEEP_SECONDS = 1.0
SWEEP_PAGE = 100

Queue = Callable[[Any, str, list[Any], "Settler"], Any]
Read = Callable[[Any, Any, "Settler"], None]


class _Batches:
    """One script call per source stream and ack flush (``AckBatcher.batch``), for one
    saga script."""

    def __init__(self, queue: Queue, read: Read | None = None) -> None:
        self._queue = queue
        self._read = read

    def add(self, settler: Settler, source: str, item: Any) -> None:
        read = self._read
        settler.acker.batch(
            (id(self), source), item,
            lambda pipe, items: self._queue(pipe, source, items, settler),
            None if read is None else (lambda queued, reply: read(queued, reply, settler)))


class SagaRuntime:
    """What the runtime needs of one saga type: its layout and its scripts' batches."""

    def __init__(self, keys: SagaKeys, retention_s: int,
                 undoable: Callable[[], tuple[str, ...]], outcomes: Callable[[], bool],
                 integrity: Integrity | None = None) -> None:
        self.keys = keys
        self.integrity = integrity
        """Signs a step's events again once they carry the saga's fields and stream."""
        self._retention_s = retention_s
        self._undoable = undoable
        self._outcomes = outcomes
        self._layout: SagaLayout | None = None

    @property
    def layout(self) -> SagaLayout:
        """Built at first use, once every step and compensation is declared."""
        if self._layout is None:
            self._layout = SagaLayout(self.keys, self._undoable(), self._retention_s,
                                      self._outcomes())
        return self._layout

    def deadline_loop(self) -> tuple[str, BackgroundLoop]:
        async def sweep(client: Any) -> None:
            while True:
                await asyncio.sleep(DEADLINE_SWEEP_SECONDS)
                turned = await self.turn_back_due(client)
                if turned:
                    log.warning("saga deadlines passed; compensating", extra={
                        "saga": self.keys.saga, "count": turned})

        return f"saga-deadlines:{self.keys.saga}", sweep

    async def turn_back_due(self, client: Any) -> int:
        """Stop every running saga whose deadline has passed (a page at a time, until none
        is left); returns how many this call stopped. Sweepers in other processes may stop
        some of them first: each saga is stopped once (saga_abort.lua)."""
        turned = 0
        while True:
            now_ms = int(time.time() * 1000)
            due = await saga_store.due(client, self.keys, now_ms=now_ms, limit=SWEEP_PAGE)
            for saga_id in due:
                turned += await saga_store.abort(client, self.layout, saga_id,
                                                 cause="timed_out", only_if_due=True,
                                                 now_ms=now_ms)
            if len(due) < SWEEP_PAGE or await saga_store.due(
                    client, self.keys, now_ms=now_ms, limit=1) == due[:1]:
                return turned


def _saga_id(call: Call) -> str:
    raw = call.envelope.fields.get(b"saga_id")
    return raw.decode() if raw else ""


def _step(call: Call) -> str:
    raw = call.envelope.fields.get(b"step")
    return raw.decode() if raw else ""


class StepPlugin:
    """A saga step's settlement: commit with the ledger, or turn the saga back."""

    def __init__(self, saga: SagaRuntime, step: str, routes: Callable[[], dict[str, str]],
                 undo_if_failed: bool) -> None:
        self._saga = saga
        self._step = step
        self._routes = routes
        """stream -> the saga's step reacting to it: events published there stay inside."""
        self._undo_if_failed = undo_if_failed
        self._commits = _Batches(self._queue_commits, self._read_commits)
        self._failures = _Batches(self._queue_failures)

    def background(self) -> Sequence[tuple[str, BackgroundLoop]]:
        return [self._saga.deadline_loop()]

    def settle(self, call: Call, outcome: Outcome, settler: Settler) -> Outcome | None:
        kind = outcome.kind
        envelope = call.envelope
        saga_id = _saga_id(call)
        if not saga_id or isinstance(outcome.error, MessageRejected):
            # not a saga message (someone wrote to the stream by hand), or an entry refused
            # on arrival (its saga fields are not to be trusted): a plain dead letter
            return None
        if (kind is Kind.OK or kind is Kind.FALLBACK) and self._branches(outcome) > 1:
            # A saga is a chain: two events for its steps would be two branches, and the
            # first to end would complete the saga under the other one.
            outcome = Outcome.aborted(StepAborted(
                f"saga step {self._step!r} sent events to {self._branches(outcome)} of the "
                "saga's steps; a saga is a chain: send one event to the next step"),
                "saga steps form a chain")
            kind = outcome.kind
        if kind is Kind.OK or kind is Kind.FALLBACK:
            keys, routes = self._saga.keys, self._routes()
            integrity = self._saga.integrity
            follow_ups: list[tuple[str, Any]] = []
            for follow_up in outcome.follow_ups:
                fields = dict(follow_up.fields)
                fields["saga"], fields["saga_id"] = keys.saga, saga_id
                step = routes.get(follow_up.stream)
                target = follow_up.stream if step is None else keys.on(follow_up.stream)
                if step is not None:
                    fields["step"] = step
                if integrity is not None:
                    integrity.sign(target, fields)
                follow_ups.append((target, fields))
            memo = call.memo if call.memo is not None else envelope.payload
            self._commits.add(settler, envelope.source, StepDone(
                envelope.entry_id, saga_id, self._step, settler.keys.done(envelope.message_id),
                memo, follow_ups))
            return outcome
        if kind is Kind.DEAD_LETTER or kind is Kind.ABORTED:
            aborted = kind is Kind.ABORTED
            letter = b"" if aborted else settler.packed_dead_letter(envelope, outcome)
            if not aborted:
                settler.log_dead_letter(envelope, outcome)
            memo = call.memo if call.memo is not None else envelope.payload
            self._failures.add(settler, envelope.source, StepFailed(
                envelope.entry_id, saga_id, self._step, letter,
                "aborted" if aborted else "step_failed", str(outcome.error)[:500],
                self._undo_if_failed, memo))
            return outcome
        return None

    def _branches(self, outcome: Outcome) -> int:
        routes = self._routes()
        return sum(1 for f in outcome.follow_ups if f.stream in routes)

    def _queue_commits(self, pipe: Any, source: str, items: list[StepDone],
                       settler: Settler) -> Any:
        return saga_store.queue_step_commit(
            pipe, self._saga.layout, source=source, group=settler.group, items=items,
            drop_source=source == settler.keys.retry, marker_ttl=settler.marker_ttl,
            now_ms=int(time.time() * 1000))

    def _read_commits(self, call: Any, reply: Any, settler: Settler) -> None:
        codes, relays = call.read(reply)
        settler.acker.relay(relays)
        for item, code in zip(call.items, codes, strict=True):
            if code == 3:
                log.warning("saga step finished after its saga stopped; compensating it",
                            extra={"saga_id": item.saga_id, "step": item.step})
            elif code == 4:
                log.warning("saga step for an unknown or expired saga; acked, nothing sent",
                            extra={"saga_id": item.saga_id, "step": item.step})

    def _queue_failures(self, pipe: Any, source: str, items: list[StepFailed],
                        settler: Settler) -> None:
        saga_store.queue_step_failures(
            pipe, self._saga.layout, source=source, dlq=settler.keys.dlq, group=settler.group,
            items=items, drop_source=source == settler.keys.retry,
            now_ms=int(time.time() * 1000))


class UndoPlugin:
    """A compensation's settlement: the next compensation, or the saga failed."""

    def __init__(self, saga: SagaRuntime, step: str) -> None:
        self._saga = saga
        self._step = step
        self._done = _Batches(self._queue_done)
        self._failures = _Batches(self._queue_failures)

    def background(self) -> Sequence[tuple[str, BackgroundLoop]]:
        return [self._saga.deadline_loop()]

    def settle(self, call: Call, outcome: Outcome, settler: Settler) -> Outcome | None:
        kind = outcome.kind
        envelope = call.envelope
        saga_id = _saga_id(call)
        if not saga_id:
            return None
        late = envelope.fields.get(b"late") == b"1"
        if kind is Kind.OK or kind is Kind.FALLBACK:
            self._done.add(settler, envelope.source, Undone(
                envelope.entry_id, saga_id, self._step,
                settler.keys.done(envelope.message_id), late))
            return outcome
        if kind is Kind.ABORTED:
            # A compensation has nothing to abort: it failed, and the saga with it.
            outcome = outcome.as_dead_letter()
            kind = outcome.kind
        if kind is Kind.DEAD_LETTER:
            settler.log_dead_letter(envelope, outcome)
            self._failures.add(settler, envelope.source, UndoFailed(
                envelope.entry_id, saga_id, self._step,
                settler.packed_dead_letter(envelope, outcome),
                str(outcome.error)[:500], late))
            return outcome
        return None

    def _queue_done(self, pipe: Any, source: str, items: list[Undone],
                    settler: Settler) -> None:
        saga_store.queue_undone(
            pipe, self._saga.layout, source=source, group=settler.group, items=items,
            drop_source=source == settler.keys.retry, marker_ttl=settler.marker_ttl,
            now_ms=int(time.time() * 1000))

    def _queue_failures(self, pipe: Any, source: str, items: list[UndoFailed],
                        settler: Settler) -> None:
        saga_store.queue_undo_failures(
            pipe, self._saga.layout, source=source, dlq=settler.keys.dlq, group=settler.group,
            items=items, drop_source=source == settler.keys.retry,
            now_ms=int(time.time() * 1000))
