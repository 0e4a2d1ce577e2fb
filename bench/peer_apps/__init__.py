"""Peer frameworks' apps for ``bench/peers.py``, one module per framework.

The modules below this package import their framework, so only the peers' own virtualenv
(``bench/.peers-venv``) runs them; this ``__init__`` imports nothing but pydantic and redis,
so ``bench/peers.py`` (in the project's venv) can share the names defined here.

The setting a run measures (``bench/peers.py``'s sweep) reaches an app as ``BENCH_<KNOB>``
variables, read with ``setting``.

Every key a run leaves in Redis contains its run id (``BENCH_PEER_RUN``): the queue, stream
or namespace of peer ``P`` is ``queue_name(run, P)``, and the clean-up deletes ``*<run>*``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

RUN = os.environ.get("BENCH_PEER_RUN", "bench-peer-local")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
N = int(os.environ.get("BENCH_N", "1000"))
GROUP = "bench"
"""Consumer group of the stream-based peers (taskiq, faststream)."""


def setting(knob: str, default: int) -> int:
    """The value of a knob of the setting under measure (``BENCH_<KNOB>``), or ``default``."""
    return int(os.environ.get(f"BENCH_{knob.upper()}", default))


def queue_name(run: str, peer: str) -> str:
    """The queue, stream or key namespace peer ``peer`` uses in run ``run``."""
    return f"{run}:{peer}"


def started_key(run: str) -> str:
    """Set by a handler's first call, for peers whose fetch leaves no trace in Redis."""
    return f"{run}:started"


class Order(BaseModel):
    """The same model seawall's bench app and the raw loop validate every message with."""

    n: int
    order_id: str
    amount_cents: int


def payloads(n: int = N) -> Iterator[dict[str, Any]]:
    """The messages every framework drains, as plain dicts for its own serializer."""
    for i in range(n):
        yield {"n": i, "order_id": f"o-{i}", "amount_cents": 500 + i}


def chunks(n: int = N, size: int = 500) -> Iterator[list[dict[str, Any]]]:
    """``payloads(n)`` in batches, for enqueue APIs that pipeline or run concurrently."""
    batch: list[dict[str, Any]] = []
    for payload in payloads(n):
        batch.append(payload)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


_started = False


def mark_started() -> None:
    """Record the first handler call of this process (one blocking SET, once)."""
    global _started
    if not _started:
        _started = True
        import redis

        redis.Redis.from_url(REDIS_URL).set(started_key(RUN), "1", ex=3600)
