"""Acks leave in batches: one pipeline carries every ack that piled up while the previous
pipeline was on the wire, so the hot path costs no Redis round trip per message.

Other per-batch bookkeeping (the breakers' outcome records) rides in the same pipeline.
If Redis is away the pending acks are kept and sent with the next flush: at worst a message
is delivered again, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger("seawall.acker")

PipelineStep = Callable[[Any], None]
"""Adds commands to a pipeline; called once per flush by each registered contributor."""


class AckBatcher:
    __slots__ = ("_acks", "_client", "_contributors", "_flushing", "_wake", "_task")

    def __init__(self, client: Any) -> None:
        self._client = client
        self._acks: dict[tuple[str, str], list[str]] = {}
        self._contributors: list[Callable[[Any], bool]] = []
        self._wake = asyncio.Event()
        self._flushing = False
        self._task: asyncio.Task[None] | None = None

    def ack(self, stream: str, group: str, entry_id: str) -> None:
        key = (stream, group)
        ids = self._acks.get(key)
        if ids is None:
            self._acks[key] = [entry_id]
        else:
            ids.append(entry_id)
        self._wake.set()

    def contribute(self, step: Callable[[Any], bool]) -> None:
        """Register ``step(pipe) -> bool``: it adds its own commands to each flush and says
        whether it added any."""
        self._contributors.append(step)

    def nudge(self) -> None:
        self._wake.set()

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._acks.values())

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
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for (stream, group), ids in acks.items():
                    pipe.xack(stream, group, *ids)
                extra = False
                for step in self._contributors:
                    extra = step(pipe) or extra
                if acks or extra:
                    await pipe.execute()
        except BaseException:
            for key, ids in acks.items():
                self._acks.setdefault(key, []).extend(ids)
            raise

    async def close(self) -> None:
        """Stop the background flusher and send what is left (shielded from cancellation)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await asyncio.shield(self.flush())
        except (RedisError, OSError) as exc:
            log.warning("final ack flush failed; those messages will be delivered again",
                        extra={"error": repr(exc), "acks": self.pending})
