"""Loading the Lua scripts in ``queues/lua``.

Each ``.lua`` file is one atomic operation. A :class:`LuaScript` reads its file once and
registers it with each client lazily (EVALSHA, falling back to EVAL/SCRIPT LOAD on NOSCRIPT,
which redis-py's ``Script`` does). Modules that own an operation wrap its script in one
typed async function; nothing dispatches scripts by name at run time.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from weakref import WeakKeyDictionary


def _read(name: str) -> str:
    return resources.files("queues.lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


class LuaScript:
    """One Lua file, registered once per Redis client."""

    __slots__ = ("_registered", "name", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _read(name)
        self._registered: WeakKeyDictionary[Any, Any] = WeakKeyDictionary()

    def bind(self, client: Any) -> Any:
        """The redis-py ``Script`` (or ``AsyncScript``) for ``client``; also usable on a pipeline."""
        script = self._registered.get(client)
        if script is None:
            script = client.register_script(self.source)
            self._registered[client] = script
        return script

    async def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        return await self.bind(client)(keys=keys, args=args)

    def call_sync(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        return self.bind(client)(keys=keys, args=args)
