"""The handler registry in Redis (``seawall:registry``), so operators' tools (``status``,
``dlq``, ``breaker``) find every handler's stream and pool without importing the app."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from queues import registry_store
from queues.keys import HandlerKeys


@dataclass(frozen=True, slots=True)
class HandlerRecord:
    name: str
    stream: str
    pool: str
    app: str
    claim_after: float = 30.0
    max_deliveries: int = 5
    breaker: dict[str, Any] | None = field(default=None)
    """The breaker's configuration as JSON-able values, or None when the handler has none."""

    @property
    def keys(self) -> HandlerKeys:
        return HandlerKeys(self.stream, self.name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> HandlerRecord:
        data = json.loads(raw)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def registry_mapping(records: list[HandlerRecord]) -> dict[str, str]:
    return {r.name: r.to_json() for r in records}


def parse_registry(raw: dict[Any, Any]) -> dict[str, HandlerRecord]:
    out: dict[str, HandlerRecord] = {}
    for name, value in raw.items():
        key = name.decode() if isinstance(name, bytes) else str(name)
        try:
            out[key] = HandlerRecord.from_json(value)
        except (ValueError, TypeError):
            continue
    return dict(sorted(out.items()))


def read_registry_sync(client: Any) -> dict[str, HandlerRecord]:
    return parse_registry(registry_store.read_handlers_sync(client))


async def read_registry(client: Any) -> dict[str, HandlerRecord]:
    return parse_registry(await registry_store.read_handlers(client))


async def write_registry(client: Any, records: list[HandlerRecord]) -> None:
    await registry_store.write_handlers(client, registry_mapping(records))
