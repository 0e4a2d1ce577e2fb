"""The application object: pools, handlers, and producing messages."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel

from queues import producer
from queues.connection import connect, connect_sync, resolve_url
from queues.envelope import encode
from workers.errors import ConfigError
from workers.handler import HandlerSpec, build_spec, check_middleware
from workers.integrity import DEFAULT_MAX_PAYLOAD_BYTES, Integrity
from workers.middleware import Middleware, Observer
from workers.pool_config import PoolConfig
from workers.registry import HandlerRecord

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from workers.runtime.tracing import Tracing

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=Middleware)
Obs = TypeVar("Obs", bound=Observer)
Payload = BaseModel | Mapping[str, Any] | str | bytes
TRACING_ENV = "SEAWALL_TRACING"
_ON = ("1", "true", "yes", "on")
_NO_SPAN = nullcontext()


class App:
    """A set of pools and handlers, and a producer.

    The Redis URL is, in order: ``--redis-url``, ``SEAWALL_REDIS_URL``, ``App(redis_url=)``,
    ``redis://localhost:6379/0``.

    ``tracing``: OpenTelemetry spans of the messages it publishes and handles (the ``otel``
    extra; :mod:`workers.runtime.tracing`): True sends them to the global tracer provider,
    a ``TracerProvider`` to that one; None (the default) turns them on when
    ``SEAWALL_TRACING=1``.

    ``max_payload_bytes`` (default 1 MiB): publishing a longer payload raises
    :class:`~workers.errors.PayloadTooLarge` and writes nothing; a longer entry read by a
    handler is dead-lettered (:class:`~workers.errors.MessageTooLarge`) without its payload.

    ``signing_keys`` (key id -> key, bytes or str, at least 32 bytes each) and
    ``sign_with`` (one of the ids; optional with a single key): every message the app
    publishes is signed with HMAC-SHA256 under ``sign_with``, and its handlers accept only
    messages signed under one of ``signing_keys``; the others are dead-lettered as
    :class:`~workers.errors.SignatureError`. Off by default. See docs/signing.md.
    """

    def __init__(self, name: str, *, redis_url: str | None = None,
                 tracing: bool | TracerProvider | None = None,
                 signing_keys: Mapping[str, bytes | str] | None = None,
                 sign_with: str | None = None,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError("App needs a name: App('shop')")
        self.integrity = Integrity(signing_keys=signing_keys, sign_with=sign_with,
                                   max_payload_bytes=max_payload_bytes)
        """Payload limits and signing keys (:mod:`workers.integrity`)."""
        self.name = name
        self.redis_url = redis_url
        self.pools: dict[str, PoolConfig] = {"default": PoolConfig("default")}
        self._declared_pools: set[str] = set()
        self.handlers: dict[str, HandlerSpec] = {}
        self._sync_client: redis.Redis | None = None
        self._sync_client_lock = threading.Lock()
        """Sync handlers publish from their pool's threads: one client for all of them."""
        self._async_clients: dict[int, aioredis.Redis] = {}
        self.middleware_stack: list[Middleware] = []
        """App-wide middleware, outermost first; see :mod:`workers.middleware`."""
        self.observers: list[Observer] = []
        """Called with every settled message in the pool processes."""
        self.tracing: Tracing | None = None
        """The app's spans (None: not traced)."""
        if tracing is None and os.environ.get(TRACING_ENV, "").lower() in _ON:
            from workers.runtime.tracing import start
            self.tracing = start(required=False)
        elif tracing is not None and tracing is not False:
            from workers.runtime.tracing import start
            self.tracing = start(None if tracing is True else tracing, required=True)

    # -- declaring ---------------------------------------------------------------------

    def pool(self, name: str, **options: Any) -> PoolConfig:
        """Declare a bulkhead. Pools named by handlers but never declared get the defaults."""
        if name in self._declared_pools:
            raise ConfigError(f"pool {name!r} is declared twice; declare each pool once")
        config = PoolConfig.build(name, options)
        self.pools[name] = config
        self._declared_pools.add(name)
        return config

    def handler(self, stream: str, **options: Any) -> Callable[[F], F]:
        """Register a handler for ``stream``; see :func:`workers.handler.build_spec`."""

        def register(func: F) -> F:
            spec = build_spec(func, stream, options)
            if spec.name in self.handlers:
                other = self.handlers[spec.name]
                raise ConfigError(
                    f"handler name {spec.name!r} is used twice (streams {other.stream!r} and "
                    f"{stream!r}); give one of them another name with "
                    f"@app.handler({stream!r}, name='...')"
                )
            if spec.pool not in self.pools:
                self.pools[spec.pool] = PoolConfig(spec.pool)
            self.handlers[spec.name] = spec
            return func

        return register

    def middleware(self, layer: M) -> M:
        """Wrap every handler's calls in ``layer`` (``async def layer(call, call_next)``);
        layers added first are outermost. Usable as a decorator."""
        self.middleware_stack.append(check_middleware(layer, "app.middleware"))
        return layer

    def observe(self, observer: Obs) -> Obs:
        """Call ``observer(call, outcome)`` for every message once its outcome is settled in
        Redis (in the pool processes, on their event loop: keep it quick). Usable as a
        decorator."""
        if not callable(observer):
            raise ConfigError(f"app.observe takes a function (call, outcome), got {observer!r}")
        self.observers.append(observer)
        return observer

    def handlers_of(self, pool: str) -> list[HandlerSpec]:
        return [h for h in self.handlers.values() if h.pool == pool]

    def records(self) -> list[HandlerRecord]:
        """What the registry in Redis says about each handler (read by the CLI)."""
        return self.records_of(None)

    def records_of(self, pool: str | None) -> list[HandlerRecord]:
        out = []
        for spec in self.handlers.values():
            if pool is not None and spec.pool != pool:
                continue
            config = self.pools[spec.pool]
            out.append(
                HandlerRecord(
                    name=spec.name,
                    stream=spec.stream,
                    pool=spec.pool,
                    app=self.name,
                    claim_after=spec.claim_after or config.claim_after,
                    max_deliveries=spec.max_deliveries or config.max_deliveries,
                    breaker=spec.breaker.to_record() if spec.breaker is not None else None,
                )
            )
        return out

    # -- producing ---------------------------------------------------------------------

    def url(self, override: str | None = None) -> str:
        return resolve_url(override, self.redis_url)

    @property
    def sync_client(self) -> redis.Redis:
        if self._sync_client is None:
            with self._sync_client_lock:
                if self._sync_client is None:
                    self._sync_client = connect_sync(self.url())
        return self._sync_client

    @property
    def async_client(self) -> aioredis.Redis:
        """One client per event loop: a client's connections belong to the loop that made them."""
        loop = id(asyncio.get_running_loop())
        client = self._async_clients.get(loop)
        if client is None:
            client = connect(self.url())
            self._async_clients[loop] = client
        return client

    def sending(self, stream: str,
                *batch: MutableMapping[str, str | bytes]) -> AbstractContextManager[None]:
        """``with app.sending(stream, fields):`` around writing messages: when the app
        traces, a ``send <stream>`` span per message, its context written into the message's
        ``traceparent`` as the block starts; else nothing."""
        if self.tracing is None:
            return _NO_SPAN
        return self.tracing.send(stream, *batch)

    def publish(
        self,
        stream: str,
        payload: Payload,
        *,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish one message (blocking); returns its message id."""
        fields = encode(payload, type=type, message_id=message_id, correlation_id=correlation_id,
                        causation_id=causation_id, headers=headers)
        self.integrity.seal(stream, fields)
        with self.sending(stream, fields):
            producer.publish_fields(self.sync_client, stream, fields)
        return str(fields["id"])

    async def apublish(
        self,
        stream: str,
        payload: Payload,
        *,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish one message from async code; returns its message id."""
        fields = encode(payload, type=type, message_id=message_id, correlation_id=correlation_id,
                        causation_id=causation_id, headers=headers)
        self.integrity.seal(stream, fields)
        with self.sending(stream, fields):
            await producer.apublish_fields(self.async_client, stream, fields)
        return str(fields["id"])

    def publish_many(self, stream: str, payloads: Iterable[Payload], *,
                     type: str | None = None) -> list[str]:
        """Publish many messages in one pipelined round trip; returns their message ids."""
        batch = self._sealed(stream, payloads, type)
        with self.sending(stream, *batch):
            producer.publish_many(self.sync_client, stream, batch)
        return [str(f["id"]) for f in batch]

    async def apublish_many(self, stream: str, payloads: Iterable[Payload], *,
                            type: str | None = None) -> list[str]:
        batch = self._sealed(stream, payloads, type)
        with self.sending(stream, *batch):
            await producer.apublish_many(self.async_client, stream, batch)
        return [str(f["id"]) for f in batch]

    def _sealed(self, stream: str, payloads: Iterable[Payload],
                type: str | None) -> list[dict[str, str | bytes]]:
        """Every message encoded and sealed before any is written: one payload too large
        and none of the batch is published."""
        batch = [encode(p, type=type) for p in payloads]
        seal = self.integrity.seal
        for fields in batch:
            seal(stream, fields)
        return batch

    def close(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    async def aclose(self) -> None:
        for client in self._async_clients.values():
            await client.aclose()
        self._async_clients.clear()
        self.close()

    def __repr__(self) -> str:
        return f"App({self.name!r}, pools={sorted(self.pools)}, handlers={sorted(self.handlers)})"
