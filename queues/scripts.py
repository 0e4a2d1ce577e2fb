"""Loading the Lua scripts in ``queues/lua``.

Each ``.lua`` file is one atomic operation. A :class:`LuaScript` reads its file once.
Called on a client it goes through redis-py's ``Script`` (EVALSHA, loading the script on
NOSCRIPT). Queued on a pipeline it is a bare EVALSHA: redis-py would otherwise send a
SCRIPT EXISTS round trip before every pipeline that carries a script, which on the ack
path is one extra round trip per batch. The pool loads every script once at start
(:func:`load_all`) and again if a pipeline reply says NOSCRIPT (Redis restarted without
its scripts); a command that failed that way leaves its message pending, never lost.
Modules that own an operation wrap its script in one typed async function; nothing
dispatches scripts by name at run time.

On a Redis Cluster every script is given keys of one hash slot (keys.py's layout; the
cluster suite, tests/cluster, checks every call), so redis-py routes each EVALSHA to
the node serving that slot, and a pipeline of them is split per node. Scripts are loaded on
every node, replicas included, so that a replica promoted by a failover already has them
(if not, NOSCRIPT makes the caller load them again, as after a restart).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any
from weakref import WeakKeyDictionary

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import NoScriptError


def _read(name: str) -> str:
    return resources.files("queues.lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


_ALL: list[LuaScript] = []


class LuaScript:
    """One Lua file: registered once per Redis client, or queued on a pipeline by SHA."""

    __slots__ = ("_registered", "_sha_bytes", "name", "sha", "source")

    def __init__(self, name: str, *, libraries: tuple[str, ...] = ()) -> None:
        self.name = name
        # A script may start with libraries of functions it shares with others (unpacking
        # packed fields, the saga scripts' ledger helpers): one file per operation, no code
        # copied between them.
        self.source = "".join(_read(lib) + "\n" for lib in libraries) + _read(name)
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()
        self._sha_bytes = self.sha.encode()
        self._registered: WeakKeyDictionary[Any, Any] = WeakKeyDictionary()
        _ALL.append(self)

    def bind(self, client: Any) -> Any:
        """The redis-py ``Script`` (or ``AsyncScript``) for ``client``."""
        script = self._registered.get(client)
        if script is None:
            script = client.register_script(self.source)
            self._registered[client] = script
        return script

    def queue(self, pipe: Any, keys: list[str] | list[bytes], args: list[Any]) -> None:
        """Add an EVALSHA to ``pipe``; the script must have been loaded (:func:`load_all`)."""
        pipe.execute_command("EVALSHA", self._sha_bytes, len(keys), *keys, *args)

    def queue_with_source(self, pipe: Any, keys: list[str] | list[bytes],
                          args: list[Any]) -> None:
        """Add an EVAL carrying the script itself to ``pipe``: it cannot fail with NOSCRIPT,
        for a command that must run together with the rest of its pipeline."""
        pipe.execute_command("EVAL", self.source, len(keys), *keys, *args)

    async def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        if isinstance(client, Pipeline | ClusterPipeline):
            self.queue(client, keys, args)
            return client
        return await self.bind(client)(keys=keys, args=args)

    def call_sync(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        return self.bind(client)(keys=keys, args=args)


async def load_all(client: Any) -> None:
    """SCRIPT LOAD every script (idempotent), so pipelines may use bare EVALSHA."""
    if isinstance(client, RedisCluster):
        # Every node, replicas too: one command per script, each sent to all nodes.
        for script in _ALL:
            await client.execute_command("SCRIPT LOAD", script.source,
                                         target_nodes=RedisCluster.ALL_NODES)
        return
    async with client.pipeline(transaction=False) as pipe:
        for script in _ALL:
            pipe.script_load(script.source)
        await pipe.execute()


def is_noscript(reply: Any) -> bool:
    """True for a pipeline reply that failed because the script was not loaded."""
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, Exception) and str(reply).startswith("NOSCRIPT"))
