"""Acks leave in batches: one pipeline carries every ack that piled up while the previous
pipeline was on the wire, so the hot path costs no Redis round trip per message.

Other per-batch bookkeeping (the breakers' outcome records) rides in the same pipeline.
If Redis is away the pending acks are kept and sent with the next flush: at worst a message
is delivered again, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from queues import idempotency, scripts
from workers.runtime.tasks import cancel_and_wait

log = logging.getLogger("seawall.acker")

Contributor = Callable[[Any], "Callable[[Any], None] | None"]
"""Adds at most one command to a flush's pipeline; returns what to do with its reply."""
PipelineOp = Callable[[Any], Awaitable[Any]]
"""Queues one command (usually a Lua script) on the pipeline it is given."""


class AckBatcher:
    __slots__ = ("_acks", "_client", "_contributors", "_deletes", "_marks", "_on_sent", "_ops",
                 "_scripts_loaded", "_task", "_wake")

    def __init__(self, client: Any) -> None:
        self._client = client
        self._acks: dict[tuple[str, str], list[str]] = {}
        self._marks: list[tuple[str, int]] = []
        """Idempotency markers (key, ttl s), sent ahead of the acks in the same pipeline."""
        self._contributors: list[Contributor] = []
        self._ops: list[PipelineOp] = []
        self._on_sent: list[Callable[[], None]] = []
        self._deletes: set[str] = set()
        """Streams whose acked entries are also deleted: retry streams, read by one group."""
        self._wake = asyncio.Event()
        self._scripts_loaded = False
        self._task: asyncio.Task[None] | None = None

    def ack(self, stream: str, group: str, entry_id: str) -> None:
        key = (stream, group)
        ids = self._acks.get(key)
        if ids is None:
            self._acks[key] = [entry_id]
        else:
            ids.append(entry_id)
        self._wake.set()

    def mark_done(self, key: str, ttl: int) -> None:
        """SET ``key`` NX EX ``ttl`` with the next flush, ahead of its acks: call it before
        :meth:`ack` for a message whose completion must outlive a lost ack."""
        self._marks.append((key, ttl))
        self._wake.set()

    def delete_on_ack(self, stream: str) -> None:
        """Entries of ``stream`` are XDELed when acked (a handler's own retry stream, which
        no other group reads, would otherwise grow forever)."""
        self._deletes.add(stream)

    def add_op(self, op: PipelineOp, on_sent: Callable[[], None] | None = None) -> None:
        """Send ``op`` (an atomic script: retry later, dead-letter) with the next flush;
        ``on_sent`` runs once the pipeline carrying it has executed."""
        self._ops.append(op)
        if on_sent is not None:
            self._on_sent.append(on_sent)
        self._wake.set()

    def contribute(self, step: Contributor) -> None:
        """Register ``step(pipe)``: it adds one command to each flush if it has something to
        say, and returns a callback for that command's reply (or None if it added nothing)."""
        self._contributors.append(step)

    def nudge(self) -> None:
        self._wake.set()

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._acks.values()) + len(self._ops) + len(self._marks)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [self._task] if self._task is not None else []

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
        """Send everything queued so far in one pipeline."""
        acks, self._acks = self._acks, {}
        marks, self._marks = self._marks, []
        ops, self._ops = self._ops, []
        on_sent, self._on_sent = self._on_sent, []
        replies: list[tuple[int, Callable[[Any], None]]] = []
        results: list[Any] = []
        op_positions: list[int] = []
        try:
            if not self._scripts_loaded and (ops or self._contributors):
                await scripts.load_all(self._client)
                self._scripts_loaded = True
            async with self._client.pipeline(transaction=False) as pipe:
                by_ttl: dict[int, list[str]] = {}
                for marker, ttl in marks:
                    by_ttl.setdefault(ttl, []).append(marker)
                for ttl, markers in by_ttl.items():
                    idempotency.queue_mark_done(pipe, markers, ttl)
                for (stream, group), ids in acks.items():
                    pipe.xack(stream, group, *ids)
                    if stream in self._deletes:
                        pipe.xdel(stream, *ids)
                for op in ops:
                    op_positions.append(len(pipe.command_stack))
                    await op(pipe)
                for step in self._contributors:
                    position = len(pipe.command_stack)
                    callback = step(pipe)
                    if callback is not None:
                        replies.append((position, callback))
                if acks or marks or ops or replies:
                    results = await pipe.execute(raise_on_error=False)
        except BaseException:
            for key, ids in acks.items():
                self._acks.setdefault(key, []).extend(ids)
            self._marks[:0] = marks
            self._ops[:0] = ops
            self._on_sent[:0] = on_sent
            raise
        lost_scripts = [op for op, at in zip(ops, op_positions, strict=True)
                        if scripts.is_noscript(results[at])]
        if lost_scripts or any(scripts.is_noscript(results[at]) for at, _ in replies):
            # Redis lost its scripts (restarted): load them again and resend those ops.
            self._scripts_loaded = False
            self._ops[:0] = lost_scripts
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

    async def close(self) -> None:
        """Stop the background flusher and send what is left (shielded from cancellation)."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        try:
            await asyncio.shield(self.flush())
        except (RedisError, OSError) as exc:
            log.warning("final ack flush failed; those messages will be delivered again",
                        extra={"error": repr(exc), "acks": self.pending})
