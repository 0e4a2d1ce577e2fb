"""Connecting to Redis from a URL.

``redis://``, ``rediss://`` (TLS) and ``user:password@`` (ACL) are understood by redis-py's
``from_url``; this module adds the defaults seawall relies on (bytes replies, so that a
stream entry holding invalid UTF-8 cannot break a whole batch; keep-alive; health checks)
and :func:`redact`, so that no log line or error message ever shows the password.

The same URL may name a Redis Cluster or a primary behind Sentinel (the forms are listed in
:mod:`queues.topology`)::

    redis+cluster://host:port,host:port/          rediss+cluster://... (TLS)
    redis://host:port/?cluster=true               one seed node is enough
    redis+sentinel://[user:pass@]host:port,host:port/mymaster[/db]?sentinel_password=...

A cluster gets redis-py's ``RedisCluster`` (asyncio or blocking), which follows MOVED and
ASK, and splits a pipeline per node (non-transactional; a ``transaction=True`` pipeline is
accepted only where every key shares one slot, which keys.py's layout guarantees for the
keys of one stream). It is returned typed as a ``Redis``: seawall's code uses only the
commands both offer, and every multi-key command and script it sends stays in one slot
(checked by the cluster suite, tests/cluster). Behind Sentinel, the client asks the
sentinels for the primary whenever it connects, so after a failover the reconnect that
follows any connection error (seawall's own backoff) lands on the new primary.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any, cast

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as _AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.connection import SSLConnection
from redis.connection import parse_url as _parse_url
from redis.sentinel import Sentinel as _Sentinel

from queues.topology import Topology, parse

DEFAULT_URL = "redis://localhost:6379/0"
ENV_VAR = "SEAWALL_REDIS_URL"


def resolve_url(cli_url: str | None = None, app_url: str | None = None) -> str:
    """``--redis-url`` beats ``SEAWALL_REDIS_URL``, which beats the app's, then the default."""
    return cli_url or os.environ.get(ENV_VAR) or app_url or DEFAULT_URL


_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*password[^=&#]*=)[^&#]*")


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (user names are kept), and with the
    value of every query parameter named like a password (``sentinel_password=``,
    ``ssl_password=``) too. It works on the text, without parsing the URL, so that a URL
    too malformed to connect with (a bad port) is still shown without its password, and
    one with several hosts (``redis+cluster://``, ``redis+sentinel://``) too. The password
    is whatever stands between the first ``:`` and the last ``@`` before the query."""
    url = _SECRET_QUERY.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    head, query_sep, query = rest.partition("?")
    userinfo, at, hosts = head.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{hosts}{query_sep}{query}"


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
MAX_BLOCK_MS = 1000
"""The longest BLOCK of a worker pool's reads."""
POOL_REPLY_TIMEOUT = MAX_BLOCK_MS / 1000 + 9.0
"""Seconds a worker pool's command waits for its reply before its connection is given up."""


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

    ``reply_timeouts=False`` is for a worker pool's own client, whose blocking reads wait
    at most ``MAX_BLOCK_MS``: every reply is awaited for at most ``POOL_REPLY_TIMEOUT``
    (BLOCK + a margin; redis-py's timer costs a few microseconds a command, and the pool
    sends a command per batch, not per message), and TCP keepalive probes find a dead peer
    within about 25 s. The timeout finds what keepalive cannot: a connection whose peer
    stopped answering while something between kept it open (a half-open link through a
    proxy or NAT); the command fails, its connection is dropped, and the pool's loops
    reconnect.
    """
    size = max_connections or DEFAULT_MAX_CONNECTIONS
    options = _options(size)
    if not reply_timeouts:
        options.update(socket_timeout=POOL_REPLY_TIMEOUT,
                       socket_keepalive_options=_keepalive_options())
    topology = _topology(url)
    if topology.kind == "cluster":
        return _async_cluster(topology, url, options)
    if topology.kind == "sentinel":
        return _async_sentinel(topology, url, options, wait_for_connection)
    try:
        if wait_for_connection:
            pool: aioredis.ConnectionPool = aioredis.BlockingConnectionPool.from_url(
                url, timeout=CONNECTION_WAIT, **options)
        else:
            pool = aioredis.ConnectionPool.from_url(url, **options)
    except ValueError as exc:
        raise ValueError(f"invalid Redis URL {redact(url)}: {exc}") from None
    return aioredis.Redis.from_pool(_packing_in_c(pool))


class _HiredisPacking:
    """Commands packed into the wire protocol by hiredis (C), as redis-py's blocking
    client already does, instead of by its asyncio client's Python packer, which copies
    its whole buffer once per argument: the XACK of a batch of 100 entry ids took 63 us
    to pack, 6 us in C (0.6 us of every message acknowledged). An argument hiredis does
    not take (a bool, None, a bytearray) goes to redis-py's packer, which raises its
    usual DataError for it."""

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        if isinstance(head, str):  # 'XINFO GROUPS': the words go as arguments of their own
            args = (*head.encode().split(), *args[1:])
        elif b" " in head:
            args = (*head.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
            return packed


_PACKING_IN_C: dict[type, type] = {}


def _packing_in_c(pool: aioredis.ConnectionPool) -> aioredis.ConnectionPool:
    """``pool``, its connections (plain, TLS, Unix socket, Sentinel's) made with
    :class:`_HiredisPacking`."""
    base = pool.connection_class
    if not issubclass(base, _HiredisPacking):
        fast = _PACKING_IN_C.get(base)
        if fast is None:
            fast = _PACKING_IN_C[base] = type(base.__name__, (_HiredisPacking, base), {})
        pool.connection_class = fast
    return pool


def connect_sync(url: str, *, max_connections: int | None = None,
                 timeout: float | None = None) -> redis.Redis:
    """A blocking client, for producers in synchronous code and for the CLI. ``timeout``
    bounds connecting and every reply, in seconds, for a caller that must not hang on an
    unreachable Redis (default: connecting takes up to 5 s, replies are awaited)."""
    options = _options(max_connections)
    if timeout is not None:
        options.update(socket_connect_timeout=timeout, socket_timeout=timeout)
    topology = _topology(url)
    if topology.kind == "cluster":
        return _sync_cluster(topology, url, options)
    if topology.kind == "sentinel":
        return _sync_sentinel(topology, url, options)
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
    """The Redis server's clock in ms (TIME): the clock the breaker scripts use (on a
    cluster, one node's: the breaker scripts read their own node's)."""
    reply: Any = client.time()
    if isinstance(reply, dict):  # a cluster answers per node
        reply = next(iter(reply.values()))
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


# -- Redis Cluster and Sentinel ---------------------------------------------------------

# redis-py leaves these untyped.
parse_url: Any = _parse_url
AsyncSentinel: Any = _AsyncSentinel
Sentinel: Any = _Sentinel


def _topology(url: str) -> Topology:
    return parse(url, redacted=redact(url))


def is_cluster(client: Any) -> bool:
    """True for a client :func:`connect` or :func:`connect_sync` made for a Redis Cluster."""
    return isinstance(client, redis.RedisCluster | aioredis.RedisCluster)


def is_cluster_url(url: str) -> bool:
    """True if ``url`` names a Redis Cluster (no I/O)."""
    return _topology(url).kind == "cluster"


def _node_kwargs(topology: Topology, url: str) -> dict[str, Any]:
    """Connection arguments for the data nodes: credentials, database, TLS and query
    options, read by redis-py's own URL parser; no host or port."""
    try:
        kwargs: dict[str, Any] = dict(parse_url(topology.node_url))
    except ValueError as exc:
        raise ValueError(f"invalid Redis URL {redact(url)}: {exc}") from None
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    if kwargs.pop("connection_class", None) is SSLConnection:
        kwargs["ssl"] = True
    return kwargs


def _cluster_kwargs(topology: Topology, url: str, options: dict[str, Any]) -> dict[str, Any]:
    kwargs = {**_node_kwargs(topology, url), **options}
    kwargs.pop("db", None)
    # redis-py's cluster client has no blocking pool: max_connections is per node, and a
    # command past it fails at once (callers size the pool for what they run at once).
    return kwargs


class _AsyncCluster(aioredis.RedisCluster):
    """redis-py's asyncio cluster client, which learns the cluster's layout before it picks
    the node for a command. redis-py 8.1 picks the node first: commands that many tasks send
    at once while the client is still new go through seed-node objects whose connections the
    layout discovery then closes under them (``'NoneType' object has no attribute
    'writelines'``)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


def _async_cluster(topology: Topology, url: str, options: dict[str, Any]) -> aioredis.Redis:
    from redis.asyncio.cluster import ClusterNode

    nodes = [ClusterNode(host, port) for host, port in topology.seeds]
    client = _AsyncCluster(startup_nodes=nodes,
                                   **_cluster_kwargs(topology, url, options))
    return cast(aioredis.Redis, client)


def _sync_cluster(topology: Topology, url: str, options: dict[str, Any]) -> redis.Redis:
    from redis.cluster import ClusterNode as _ClusterNode

    node_class: Any = _ClusterNode
    nodes = [node_class(host, port) for host, port in topology.seeds]
    client = redis.RedisCluster(startup_nodes=nodes, **_cluster_kwargs(topology, url, options))
    return cast(redis.Redis, client)


def _sentinel_kwargs(topology: Topology, node: dict[str, Any],
                     options: dict[str, Any]) -> dict[str, Any]:
    """How to reach the sentinels: the socket options, their own credentials (if any), and
    TLS like the data nodes with ``rediss+sentinel``."""
    kwargs: dict[str, Any] = {k: v for k, v in options.items() if k.startswith("socket_")}
    kwargs.update(topology.sentinel_auth)
    if topology.tls:
        kwargs.update({k: v for k, v in node.items() if k == "ssl" or k.startswith("ssl_")})
    return kwargs


class _AsyncSentinelClient(aioredis.Redis):
    """The primary's client; closing it closes its connections to the sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


class _SentinelClient(redis.Redis):
    """The primary's blocking client; closing it closes its connections to the sentinels."""

    def close(self) -> None:
        super().close()
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            sentinel.close()


class _BlockingSentinelPool(AsyncSentinelPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (connections go to the primary the sentinels name) that, full, makes
    a command wait for a connection, as :func:`connect`'s pools do."""


def _async_sentinel(topology: Topology, url: str, options: dict[str, Any],
                    wait_for_connection: bool) -> aioredis.Redis:
    node = {**_node_kwargs(topology, url), **options}
    sentinel = AsyncSentinel(list(topology.seeds),
                             sentinel_kwargs=_sentinel_kwargs(topology, node, options))
    if wait_for_connection:
        client: aioredis.Redis = sentinel.master_for(
            topology.service, redis_class=_AsyncSentinelClient,
            connection_pool_class=_BlockingSentinelPool, timeout=CONNECTION_WAIT, **node)
    else:
        client = sentinel.master_for(topology.service, redis_class=_AsyncSentinelClient,
                                     **node)
    _packing_in_c(client.connection_pool)
    return client


def _sync_sentinel(topology: Topology, url: str, options: dict[str, Any]) -> redis.Redis:
    node = {**_node_kwargs(topology, url), **options}
    sentinel = Sentinel(list(topology.seeds),
                        sentinel_kwargs=_sentinel_kwargs(topology, node, options))
    client: redis.Redis = sentinel.master_for(topology.service, redis_class=_SentinelClient,
                                              **node)
    return client
