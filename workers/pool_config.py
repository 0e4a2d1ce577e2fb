"""A pool's declaration: the size and limits of one bulkhead."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from workers.errors import ConfigError
from workers.options import positive, reject_unknown


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One bulkhead. Each pool runs in its own OS process(es) with its own Redis connection
    pool, its own concurrency limit and its own timeouts, so a slow or crashing handler
    starves only its own pool."""

    name: str
    concurrency: int = 16
    """Messages handled at once per process (async handlers under a limiter, sync handlers
    in the pool's own thread pool of this size)."""
    processes: int = 1
    """OS processes the supervisor keeps running for this pool."""
    timeout: float | None = 300.0
    """Seconds a handler may run before it counts as failed (None: no limit)."""
    claim_after: float = 30.0
    """Seconds an entry may sit unacked with a consumer that stopped refreshing it before
    another consumer takes it over."""
    batch_size: int = 100
    """Entries asked for per XREADGROUP (never more than the free slots)."""
    max_deliveries: int = 5
    """Deliveries of one entry that never completed (it crashed its process) before it is
    dead-lettered instead of delivered again."""

    def __post_init__(self) -> None:
        what = f"pool {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("a pool needs a non-empty name: app.pool('payments', ...)")
        for name in ("concurrency", "processes", "batch_size", "max_deliveries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{what}: {name} must be an integer >= 1, got {value!r}")
        positive(what, "timeout", self.timeout, allow_none=True)
        positive(what, "claim_after", self.claim_after)

    @classmethod
    def build(cls, name: str, options: dict[str, Any]) -> PoolConfig:
        known = {f.name for f in fields(cls)} - {"name"}
        reject_unknown(f"app.pool({name!r})", {k: v for k, v in options.items() if k not in known},
                       known)
        return cls(name=name, **options)

    def with_concurrency(self, concurrency: int | None) -> PoolConfig:
        return self if concurrency is None else replace(self, concurrency=concurrency)
