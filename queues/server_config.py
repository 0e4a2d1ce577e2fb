"""Is this Redis configured to keep seawall's data? Read at ``seawall run``'s start.

Two settings lose messages without an error: an eviction policy (anything but
``noeviction``) lets Redis delete keys when it reaches ``maxmemory`` (streams, pending
entries, delayed retries, dead letters, breaker states, saga ledgers, whichever it picks),
and no persistence at all (no append-only file, no RDB save point) loses everything on a
restart. :func:`durability_warnings` says so, as a pure function of the settings;
:func:`read_settings` reads them with ``CONFIG GET``, which a least-privilege user may not
run (``seawall acl`` does not grant it: ``CONFIG GET`` also shows ``requirepass``), so
:func:`check` turns a refusal into a warning that the settings could not be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from queues.connect_errors import describe, is_permanent
from queues.connection import connect_sync

TIMEOUT = 3.0
"""Seconds the start waits for Redis to answer before going on without the check."""


@dataclass(frozen=True, slots=True)
class Settings:
    maxmemory_policy: str
    maxmemory: int
    appendonly: bool
    save: str
    """RDB save points (``"3600 1 300 100"``), ``""`` for none."""


def durability_warnings(settings: Settings) -> list[str]:
    """What in ``settings`` can lose seawall's data silently, one sentence each."""
    out: list[str] = []
    if settings.maxmemory_policy != "noeviction":
        limit = (f"maxmemory is {settings.maxmemory} bytes" if settings.maxmemory
                 else "maxmemory is 0 (no limit) for now")
        out.append(
            f"Redis's maxmemory-policy is {settings.maxmemory_policy} ({limit}): at its "
            "memory limit Redis evicts keys without an error, seawall's streams, pending "
            "entries, retries, dead letters, breakers and saga ledgers among them; set "
            "maxmemory-policy noeviction, so that writes fail loudly instead")
    if not settings.appendonly and not settings.save.strip():
        out.append(
            "Redis's persistence is off (appendonly no, no save points): a restart of "
            "Redis loses every message, retry, dead letter, breaker state and saga; set "
            "appendonly yes (appendfsync everysec, or always)")
    return out


def _value(reply: Any, name: str) -> str:
    """One setting of a CONFIG GET reply (a dict; on a cluster, one per node)."""
    if isinstance(reply, dict) and reply and all(isinstance(v, dict) for v in reply.values()):
        reply = next(iter(reply.values()))
    raw = reply.get(name, reply.get(name.encode())) if isinstance(reply, dict) else None
    if raw is None:
        raise LookupError(f"CONFIG GET {name} gave no value")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def read_settings(client: redis.Redis) -> Settings:
    """The settings, by ``CONFIG GET`` (one per setting: older servers take one name)."""
    values = {name: _value(client.config_get(name), name)
              for name in ("maxmemory-policy", "maxmemory", "appendonly", "save")}
    return Settings(maxmemory_policy=values["maxmemory-policy"],
                    maxmemory=int(values["maxmemory"] or 0),
                    appendonly=values["appendonly"] == "yes", save=values["save"])


class Unreachable(Exception):
    """Redis refused the connection for good (a refused certificate, a wrong password)."""


def check(url: str, *, timeout: float = TIMEOUT) -> list[str]:
    """The warnings for the Redis at ``url``: its durability warnings, or one saying why
    they could not be checked. Raises :class:`Unreachable` (with a message naming the
    setting to fix) only for failures that waiting will not cure."""
    try:
        client = connect_sync(url, timeout=timeout)
    except ValueError as exc:
        raise Unreachable(str(exc)) from None
    try:
        return durability_warnings(read_settings(client))
    except redis.exceptions.NoPermissionError:
        return ["could not check Redis's maxmemory-policy and persistence: this Redis user "
                "may not run CONFIG GET (as seawall acl's user may not); check them as an "
                "administrator: redis-cli CONFIG GET maxmemory-policy, appendonly, save"]
    except (redis.RedisError, OSError, LookupError) as exc:
        if is_permanent(exc):
            raise Unreachable(describe(exc)) from None
        return [f"could not check Redis's maxmemory-policy and persistence: {describe(exc)}"]
    finally:
        client.close()


__all__ = ["Settings", "Unreachable", "check", "durability_warnings", "read_settings"]
