"""Which Redis a URL names: one server, a Redis Cluster, or a primary found through Sentinel.

========================================================================  ===================
URL                                                                       what
========================================================================  ===================
``redis://[user:pass@]host:port/db``, ``rediss://`` (TLS)                  one server
``redis+cluster://[user:pass@]host:port,host:port/?...``                  a Redis Cluster,
``rediss+cluster://...``                                                  from its seed nodes
``redis://[user:pass@]host:port/?cluster=true`` (also ``rediss``)         a Redis Cluster,
                                                                          from one seed
``redis+sentinel://[user:pass@]host:port,host:port/service[/db]?...``     the primary of
``rediss+sentinel://...``                                                 ``service``, asked
                                                                          of the sentinels
========================================================================  ===================

Query arguments are redis-py's (``ssl_ca_certs=``, ``socket_timeout=``, ...) and apply to
every connection to a data node. The user and password of the URL are the data nodes'
(ACL); the sentinels' own, if they have any, are ``sentinel_username=`` and
``sentinel_password=``. With ``rediss+sentinel`` the sentinels are reached over TLS too.
A cluster has only database 0.

Pure parsing, no I/O: :mod:`queues.connection` builds the clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

Kind = Literal["single", "cluster", "sentinel"]

_TRUE = {"1", "true", "yes", "on"}
_SENTINEL_ONLY = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True, slots=True)
class Topology:
    """What :func:`parse` found in a URL."""

    kind: Kind
    node_url: str
    """A ``redis://`` or ``rediss://`` URL with the credentials, database and query options
    for the data nodes (for one server: the server's URL itself)."""
    seeds: tuple[tuple[str, int], ...] = ()
    """Cluster seed nodes, or the sentinels."""
    service: str = ""
    """The sentinels' name for the primary (Sentinel only)."""
    sentinel_auth: dict[str, str] = field(default_factory=dict)
    """``username`` / ``password`` for the sentinels themselves (Sentinel only)."""

    @property
    def tls(self) -> bool:
        return self.node_url.startswith("rediss:")


def _hosts(text: str, url_for_errors: str) -> tuple[tuple[str, int], ...]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [ipv6]:port
            host, _, port = part[1:].partition("]:")
        else:
            host, _, port = part.rpartition(":")
            if not host:
                host, port = port, "6379"
        if not host or not port.isdigit():
            raise ValueError(f"{url_for_errors}: cannot read host:port from {part!r}")
        out.append((host, int(port)))
    if not out:
        raise ValueError(f"{url_for_errors}: no host:port given")
    return tuple(out)


def parse(url: str, *, redacted: str | None = None) -> Topology:
    """Read ``url``; ValueError (naming ``redacted``, the URL without its password) if it
    cannot be read."""
    shown = redacted or "<redis url>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"{shown}: not a Redis URL (no scheme)")
    scheme = scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        flags = [v for k, v in query if k == "cluster"]
        if not flags or flags[-1].lower() not in _TRUE:
            if flags:  # cluster=false: drop the flag, one server
                url = parts._replace(query=urlencode(
                    [(k, v) for k, v in query if k != "cluster"])).geturl()
            return Topology("single", url)
        if scheme == "unix":
            raise ValueError(f"{shown}: a Redis Cluster is not reached over a unix socket")
        rest_query = urlencode([(k, v) for k, v in query if k != "cluster"])
        node_url = parts._replace(query=rest_query).geturl()
        return Topology("cluster", node_url, _hosts(parts.netloc.rpartition("@")[2], shown))
    base, plus, mode = scheme.partition("+")
    if not plus or base not in ("redis", "rediss") or mode not in ("cluster", "sentinel"):
        raise ValueError(f"{shown}: unknown scheme {scheme!r} (redis, rediss, redis+cluster, "
                         "rediss+cluster, redis+sentinel, rediss+sentinel)")
    netloc, _, tail = rest.partition("/")
    path, _, query_text = tail.partition("?")
    if "?" in netloc:  # redis+cluster://h:p?x=1 (no slash before the query)
        netloc, _, query_text = netloc.partition("?")
        path = ""
    userinfo, at, hosts = netloc.rpartition("@")
    seeds = _hosts(hosts, shown)
    query = parse_qsl(query_text, keep_blank_values=True)
    credentials = f"{userinfo}@" if at else ""
    first = f"[{seeds[0][0]}]" if ":" in seeds[0][0] else seeds[0][0]
    if mode == "cluster":
        if path.strip("/") not in ("", "0"):
            raise ValueError(f"{shown}: a Redis Cluster has only database 0")
        node_query = urlencode([(k, v) for k, v in query if k != "cluster"])
        node_url = f"{base}://{credentials}{first}:{seeds[0][1]}/0"
        return Topology("cluster", node_url + (f"?{node_query}" if node_query else ""), seeds)
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments:
        raise ValueError(f"{shown}: name the service after the sentinels "
                         "(redis+sentinel://host:port,host:port/mymaster)")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ValueError(f"{shown}: the path is /service or /service/db")
    service, db = segments[0], (segments[1] if len(segments) == 2 else "0")
    sentinel_auth = {k.removeprefix("sentinel_"): v for k, v in query if k in _SENTINEL_ONLY}
    node_query = urlencode([(k, v) for k, v in query if k not in _SENTINEL_ONLY])
    node_url = f"{base}://{credentials}{first}:{seeds[0][1]}/{db}"
    return Topology("sentinel", node_url + (f"?{node_query}" if node_query else ""), seeds,
                    service, sentinel_auth)


__all__ = ["Kind", "Topology", "parse"]
