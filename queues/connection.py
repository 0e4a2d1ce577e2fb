"""Connecting to Redis from a URL.

``redis://``, ``rediss://`` (TLS) and ``user:password@`` (ACL) are understood by redis-py's
``from_url``; this module adds the defaults seawall relies on (bytes replies, so that a
stream entry holding invalid UTF-8 cannot break a whole batch; keep-alive; health checks)
and :func:`redact`, so that no log line or error message ever shows the password.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis

DEFAULT_URL = "redis://localhost:6379/0"
ENV_VAR = "SEAWALL_REDIS_URL"


def resolve_url(cli_url: str | None = None, app_url: str | None = None) -> str:
    """``--redis-url`` beats ``SEAWALL_REDIS_URL``, which beats the app's, then the default."""
    return cli_url or os.environ.get(ENV_VAR) or app_url or DEFAULT_URL


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (user names are kept)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid redis url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _options(max_connections: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "socket_connect_timeout": 5,
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    return options


DEFAULT_MAX_CONNECTIONS = 100
CONNECTION_WAIT = 30.0
"""Seconds a command waits for a free connection of a full pool before it fails."""


def _keepalive_options() -> dict[int, int]:
    """TCP keepalive probes that find a dead peer within about 25 s (Linux), for
    connections whose replies have no timeout of their own."""
    names = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT")
    if not all(hasattr(socket, n) for n in names):
        return {}
    return {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}


def connect(url: str, *, max_connections: int | None = None,
            wait_for_connection: bool = True,
            reply_timeouts: bool = True) -> aioredis.Redis:
    """An asyncio client with its own connection pool (one per worker pool: a bulkhead).

    The pool is bounded. By default it is also *blocking*: when every connection is busy a
    command waits for one (up to ``CONNECTION_WAIT``). redis-py's default pool fails at
    once instead (``MaxConnectionsError`` past 100), which under a pool's full concurrency
    would turn a burst of handlers that talk to Redis into failed messages, counted by
    their breaker. ``wait_for_connection=False`` is for a caller that sized the pool for
    everything it can run at once (a worker pool's own client): it saves the blocking
    pool's lock on every command.

    ``reply_timeouts=False`` sends and reads without a timeout per command (redis-py wraps
    each one in a timer otherwise, a measurable share of a pool's CPU per message); a dead
    peer is then found by TCP keepalive probes within about 25 s instead, and blocking
    reads are bounded by their own BLOCK.
    """
    size = max_connections or DEFAULT_MAX_CONNECTIONS
    options = _options(size)
    if not reply_timeouts:
        options.update(socket_timeout=None, socket_keepalive_options=_keepalive_options())
    try:
        if wait_for_connection:
            pool: aioredis.ConnectionPool = aioredis.BlockingConnectionPool.from_url(
                url, timeout=CONNECTION_WAIT, **options)
        else:
            pool = aioredis.ConnectionPool.from_url(url, **options)
    except ValueError as exc:
        raise ValueError(f"invalid Redis URL {redact(url)}: {exc}") from None
    return aioredis.Redis.from_pool(pool)


def connect_sync(url: str, *, max_connections: int | None = None,
                 timeout: float | None = None) -> redis.Redis:
    """A blocking client, for producers in synchronous code and for the CLI. ``timeout``
    bounds connecting and every reply, in seconds, for a caller that must not hang on an
    unreachable Redis (default: connecting takes up to 5 s, replies are awaited)."""
    options = _options(max_connections)
    if timeout is not None:
        options.update(socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ValueError(f"invalid Redis URL {redact(url)}: {exc}") from None


def ping_sync(client: redis.Redis) -> None:
    """PING; raises ``redis.RedisError`` (or ``OSError``) when Redis does not answer."""
    client.ping()


def answers(url: str, timeout: float = 1.0) -> bool:
    """True if a Redis at ``url`` answers PING within ``timeout`` seconds."""
    try:
        client = connect_sync(url, timeout=timeout)
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def server_time_ms_sync(client: redis.Redis) -> int:
    """The Redis server's clock in ms (TIME): the clock the breaker scripts use."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000
