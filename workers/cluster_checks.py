"""Checks ``seawall run`` makes when the Redis URL names a Redis Cluster.

Every atomic operation of a handler (its ack with follow-ups and markers, retry, dead
letter, replay, breaker, saga step) is one script over keys of one hash slot: the stream's
(keys.py derives every key from the stream's name as its hash tag; a saga's keys carry
``{saga:<name>}``). Follow-ups to other slots go through the source stream's outbox, so no
stream layout needs two slots in one script. :func:`slot_errors` verifies that for every
handler before a pool starts: a handler whose keys would span slots fails, naming the fix.

Spreading is the other half: a slot lives on one master, so streams the user expected to
spread may all land on one node. :func:`hot_slot_warnings` (pure) names streams that share
a slot and saga types (one slot each, by design); :func:`node_warnings` names a layout where
one master serves every stream while the cluster has several.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError

from queues.commit import slot_of
from queues.connection import connect_sync, is_cluster_url
from queues.keys import HandlerKeys, outbox_sweep_lease
from queues.saga_registry import saga_of
from workers.errors import ConfigError


def handler_keys(keys: HandlerKeys) -> list[str]:
    """Every key one handler's scripts may be given together."""
    return [keys.stream, keys.retry, keys.delayed, keys.dlq, keys.dlq_counts, keys.breaker,
            keys.breaker_log, keys.outbox, outbox_sweep_lease(keys.stream),
            keys.done("message-id")]


def slot_errors(handlers: Iterable[tuple[str, HandlerKeys]]) -> list[str]:
    """One message per handler whose keys span more than one slot (none with keys.py's
    layout; the check guards the layout and any handler a plugin derives)."""
    errors = []
    for name, keys in handlers:
        slots = {slot_of(k) for k in handler_keys(keys)}
        if len(slots) > 1:
            errors.append(
                f"handler {name!r} on stream {keys.stream!r}: its keys span {len(slots)} "
                "hash slots, so its scripts would be refused by a Redis Cluster; give the "
                "stream a name whose derived keys share its slot (one hash tag for all of "
                "them: a plain name, no braces)")
    return errors


def hot_slot_warnings(streams: Iterable[str]) -> list[str]:
    """Streams that share a slot (one node always serves them together), and saga types,
    each of which is one slot by design."""
    by_slot: dict[int, list[str]] = defaultdict(list)
    sagas: dict[str, list[str]] = defaultdict(list)
    for stream in sorted(set(streams)):
        saga = saga_of(stream)
        if saga is not None:
            sagas[saga.saga].append(stream)
        else:
            by_slot[slot_of(stream)].append(stream)
    out = [f"streams {', '.join(names)} share hash slot {slot}: one Redis Cluster node "
           "always serves all of them; rename one so that they spread"
           for slot, names in sorted(by_slot.items()) if len(names) > 1]
    out += [f"saga {saga!r}: its {len(names)} step and compensation streams share one hash "
            "slot by design (its ledger and events change in one script), so one node "
            f"carries all of it; split the saga type ({saga}-eu, {saga}-us) to spread it"
            for saga, names in sorted(sagas.items()) if len(names) > 1]
    return out


def node_warnings(streams: Sequence[str], node_of: Callable[[str], str],
                  masters: int) -> list[str]:
    """A warning when one master serves every stream of the app although the cluster has
    several: the other masters do none of its work."""
    if masters < 2 or len(streams) < 2:
        return []
    nodes = {node_of(s) for s in streams}
    if len(nodes) == 1:
        [node] = nodes
        return [f"all {len(streams)} streams of this app live on one node ({node}) of "
                f"{masters} masters: the others carry none of its messages; name streams so "
                "that their slots spread (see `seawall status`, column node)"]
    return []


def check(url: str, handlers: Sequence[tuple[str, HandlerKeys]]) -> list[str]:
    """For ``seawall run``: nothing on one Redis or behind Sentinel. On a cluster, raise
    ConfigError for handlers whose keys span slots; return the warnings (hot slots, and
    one node serving every stream, when the cluster answers within 2 s)."""
    if not is_cluster_url(url):
        return []
    errors = slot_errors(handlers)
    if errors:
        raise ConfigError("; ".join(errors))
    streams = sorted({keys.stream for _, keys in handlers})
    warnings = hot_slot_warnings(streams)
    try:
        client: Any = connect_sync(url, timeout=2.0)
        try:
            masters = len(client.get_primaries())
            warnings += node_warnings(streams, lambda s: str(client.get_node_from_key(s).name),
                                      masters)
        finally:
            client.close()
    except (RedisError, OSError):
        pass  # the pools wait for the cluster; the layout is in `seawall status` later
    return warnings


__all__ = ["check", "handler_keys", "hot_slot_warnings", "node_warnings", "slot_errors"]
