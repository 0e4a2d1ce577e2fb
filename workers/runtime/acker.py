"""The ack pipeline: everything a pool settles goes to Redis in batches, one pipeline per
flush, so the hot path costs no Redis round trip per message.

A flush carries, in this order: the relays of follow-ups committed by the previous flush
(``queues.outbox``) and the outbox XDELs of those the flush before wrote, plain XACKs (+
XDEL on retry streams), one ``commit.lua`` call per (stream, group) for acks that commit
follow-ups or completion markers, the retry and dead-letter scripts, and the breakers'
outcome records. Once Redis has answered, the observers hear of every message the flush
settled. If Redis is away, everything is kept and sent with the next flush: at worst a
message is delivered again, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from redis.exceptions import RedisError

from queues import outbox, scripts, streams
from queues.commit import CommitCall, Pending, queue_commit
from queues.outbox import Relay
from workers.middleware import Call, Observer
from workers.outcome import Outcome
from workers.runtime.tasks import cancel_and_wait

log = logging.getLogger("seawall.acker")

FINAL_FLUSHES = 5
"""Flushes at most when closing, until nothing is left: a follow-up to another slot takes
three (its commit, its relay, its outbox entry's deletion), a dead letter whose entry left
its stream one more (sent again with its fields)."""

Contributor = Callable[[Any], "Callable[[Any], None] | None"]
"""Adds at most one command to a flush's pipeline; returns what to do with its reply."""
PipelineOp = Callable[[Any], Awaitable[Any]]
"""Queues one command (usually a Lua script) on the pipeline it is given."""
ReplyHandler = Callable[[Any], None]
"""Reads the reply of an op's command (an exception object if the command failed)."""
CommitKey = tuple[str, str, str, bool, int]
"""(source stream, outbox, group, delete on ack, marker ttl)."""


class AckBatcher:
    __slots__ = (
        "__weakref__",
        "_acks",
        "_batches",
        "_client",
        "_commits",
        "_contributors",
        "_deletes",
        "_flushing",
        "_observers",
        "_on_sent",
        "_ops",
        "_relayed",
        "_relays",
        "_scripts_loaded",
        "_settled",
        "_task",
        "_wake",
    )

    def __init__(self, client: Any, observers: Sequence[Observer] = ()) -> None:
        self._client = client
        self._acks: dict[tuple[str, str], list[str]] = {}
        self._commits: dict[CommitKey, list[Pending]] = {}
        self._relays: list[Relay] = []
        self._relayed: list[Relay] = []
        """Relays Redis wrote to their targets: their outbox entries go with the next
        flush."""
        self._batches: dict[Hashable, list[Any]] = {}
        self._contributors: list[Contributor] = []
        self._ops: list[tuple[PipelineOp, ReplyHandler | None]] = []
        self._on_sent: list[Callable[[], None]] = []
        self._deletes: set[str] = set()
        """Streams whose acked entries are also deleted: retry streams, read by one group."""
        self._observers = tuple(observers)
        self._settled: list[tuple[Call, Outcome]] = []
        """Messages settled since the last flush, for the observers (only if any)."""
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._scripts_loaded = False
        self._task: asyncio.Task[None] | None = None

    # -- what a settlement queues ------------------------------------------------------

    def ack(self, stream: str, group: str, entry_id: str) -> None:
        key = (stream, group)
        ids = self._acks.get(key)
        if ids is None:
            self._acks[key] = [entry_id]
        else:
            ids.append(entry_id)
        self._wake.set()

    def commit(self, stream: str, outbox: str, group: str, pending: Pending,
               marker_ttl: int = 1) -> None:
        """Ack ``pending.entry_id`` together with its completion marker and follow-ups,
        atomically (``commit.lua``), with the next flush; follow-ups bound for another slot
        go through ``outbox`` (the user's stream's)."""
        key = (stream, outbox, group, stream in self._deletes, marker_ttl)
        items = self._commits.get(key)
        if items is None:
            self._commits[key] = [pending]
        else:
            items.append(pending)
        self._wake.set()

    def delete_on_ack(self, stream: str) -> None:
        """Entries of ``stream`` are XDELed when acked (a handler's own retry stream, which
        no other group reads, would otherwise grow forever)."""
        self._deletes.add(stream)

    def add_op(self, op: PipelineOp, on_sent: Callable[[], None] | None = None,
               on_reply: ReplyHandler | None = None) -> None:
        """Send ``op`` (an atomic script: retry later, dead-letter) with the next flush;
        ``on_sent`` runs once the pipeline carrying it has executed, ``on_reply`` with the
        reply of its command (not if the command must be sent again: Redis had lost the
        script)."""
        self._ops.append((op, on_reply))
        if on_sent is not None:
            self._on_sent.append(on_sent)
        self._wake.set()

    def batch(self, key: Hashable, item: Any, queue: Callable[[Any, list[Any]], Any],
              read: Callable[[Any, Any], None] | None = None) -> None:
        """Add ``item`` to the batch ``key`` of the next flush: the first item registers an
        op that, when the flush runs, calls ``queue(pipe, items)`` once for all of them
        (one script call for a batch of dead letters, not one per message); ``read`` then
        gets what ``queue`` returned and the command's reply (unless it failed). A flush
        that fails sends the same batch again; items added meanwhile make a batch of their
        own."""
        items = self._batches.get(key)
        if items is not None:
            items.append(item)
            return
        items = self._batches[key] = [item]
        batches = self._batches
        queued: list[Any] = [None]

        async def op(pipe: Any) -> None:
            if batches.get(key) is items:
                del batches[key]
            queued[0] = queue(pipe, items)

        def on_reply(reply: Any) -> None:
            if isinstance(reply, Exception):
                log.error("a batched script failed; its messages stay pending and will be "
                          "delivered again", extra={"error": repr(reply)[:500],
                                                    "count": len(items)})
            elif read is not None:
                read(queued[0], reply)

        self.add_op(op, on_reply=on_reply)

    def relay(self, relays: Sequence[Relay]) -> None:
        """Relay follow-ups committed into an outbox (by an op's script) with the next
        flush."""
        if relays:
            self._relays.extend(relays)
            self._wake.set()

    @property
    def observed(self) -> bool:
        """Whether settled messages are reported to observers (else not even kept)."""
        return bool(self._observers)

    def settled(self, call: Call, outcome: Outcome) -> None:
        """Report ``call``'s outcome to the observers once the next flush is confirmed."""
        self._settled.append((call, outcome))

    def contribute(self, step: Contributor) -> None:
        """Register ``step(pipe)``: it adds one command to each flush if it has something to
        say, and returns a callback for that command's reply (or None if it added nothing)."""
        self._contributors.append(step)

    def nudge(self) -> None:
        self._wake.set()

    @property
    def pending(self) -> int:
        return (sum(len(v) for v in self._acks.values())
                + sum(len(v) for v in self._commits.values()) + len(self._ops)
                + len(self._relays) + len(self._relayed))

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [self._task] if self._task is not None else []

    # -- flushing ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="seawall-acker")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                log.warning("ack flush failed; will retry", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
                self._wake.set()

    async def flush(self) -> None:
        """Send everything queued so far in one pipeline. Flushes take turns: when this
        returns, whatever was queued before the call has reached Redis (or failed)."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        acks, self._acks = self._acks, {}
        commits, self._commits = self._commits, {}
        relays, self._relays = self._relays, []
        relayed, self._relayed = self._relayed, []
        ops, self._ops = self._ops, []
        on_sent, self._on_sent = self._on_sent, []
        settled, self._settled = self._settled, []
        replies: list[tuple[int, Callable[[Any], None]]] = []
        commit_calls: list[tuple[int, CommitKey, CommitCall]] = []
        results: list[Any] = []
        op_positions: list[int] = []
        relay_call: outbox.RelayCall | None = None
        try:
            if not self._scripts_loaded and (ops or commits or self._contributors):
                await scripts.load_all(self._client)
                self._scripts_loaded = True
            async with self._client.pipeline(transaction=False) as pipe:
                if relays:
                    relay_call = outbox.queue_relays(pipe, relays)
                if relayed:
                    outbox.queue_deletes(pipe, relayed)
                for (stream, group), ids in acks.items():
                    streams.queue_ack(pipe, stream, group, ids, delete=stream in self._deletes)
                for key, items in commits.items():
                    stream, outbox_key, group, drop, ttl = key
                    position = len(pipe)
                    commit_calls.append((position, key, queue_commit(
                        pipe, source=stream, outbox=outbox_key, group=group, items=items,
                        drop_source=drop, marker_ttl=ttl)))
                for op, _ in ops:
                    op_positions.append(len(pipe))
                    await op(pipe)
                for step in self._contributors:
                    position = len(pipe)
                    callback = step(pipe)
                    if callback is not None:
                        replies.append((position, callback))
                if len(pipe):
                    results = await pipe.execute(raise_on_error=False)
        except BaseException:
            self._restore(acks, commits, relays, relayed, ops, on_sent, settled)
            raise
        if relay_call is not None:
            # (a refused write stays in its outbox; the sweeper tries it again later)
            self._relayed.extend(relay_call.written(results)[0])
        lost = False
        for position, key, call in commit_calls:
            reply = results[position]
            if scripts.is_noscript(reply):
                # Redis lost its scripts (restarted): nothing of this call was applied;
                # load them again and send it again.
                self._commits.setdefault(key, [])[:0] = call.items
                lost = True
            elif not isinstance(reply, Exception):
                self._relays.extend(call.read(reply)[1])
        lost_ops = []
        for (op, on_reply), at in zip(ops, op_positions, strict=True):
            if scripts.is_noscript(results[at]):
                lost_ops.append((op, on_reply))
            elif on_reply is not None:
                on_reply(results[at])
        if lost_ops or lost or any(scripts.is_noscript(results[at]) for at, _ in replies):
            self._scripts_loaded = False
            self._ops[:0] = lost_ops
            self._wake.set()
        failed = [r for r in results if isinstance(r, Exception) and not scripts.is_noscript(r)]
        if failed:
            log.error("commands in the ack pipeline failed; those messages stay pending and "
                      "will be delivered again", extra={"errors": [repr(e) for e in failed[:5]],
                                                        "count": len(failed)})
        for sent in on_sent:
            sent()
        for position, reply_callback in replies:
            reply_callback(results[position])
        if settled:
            self._tell_observers(settled)
        if self._relays or self._relayed:
            self._wake.set()  # relay the follow-ups just committed, right away

    def _restore(self, acks: dict[tuple[str, str], list[str]],
                 commits: dict[CommitKey, list[Pending]], relays: list[Relay],
                 relayed: list[Relay], ops: list[tuple[PipelineOp, ReplyHandler | None]],
                 on_sent: list[Callable[[], None]],
                 settled: list[tuple[Call, Outcome]]) -> None:
        """A flush that did not reach Redis: put everything back for the next one."""
        for key, ids in acks.items():
            self._acks.setdefault(key, [])[:0] = ids
        for ckey, items in commits.items():
            self._commits.setdefault(ckey, [])[:0] = items
        self._relays[:0] = relays
        self._relayed[:0] = relayed
        self._ops[:0] = ops
        self._on_sent[:0] = on_sent
        self._settled[:0] = settled

    def _tell_observers(self, settled: list[tuple[Call, Outcome]]) -> None:
        for observer in self._observers:
            try:
                for call, outcome in settled:
                    observer(call, outcome)
            except Exception:
                log.exception("an observer failed; it missed part of this batch",
                              extra={"observer": getattr(observer, "__qualname__",
                                                         repr(observer))})

    async def close(self) -> None:
        """Stop the background flusher and send what is left (shielded from cancellation),
        including the relays the last commits need."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        try:
            for _ in range(FINAL_FLUSHES):
                await asyncio.shield(self.flush())
                if not self.pending:
                    break
        except (RedisError, OSError) as exc:
            log.warning("final ack flush failed; those messages will be delivered again",
                        extra={"error": repr(exc), "acks": self.pending})
