"""What every ``seawall`` subcommand shares: the Redis URL option, the client, the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from queues.connect_errors import describe
from queues.connection import connect_sync, ping_sync, redact, resolve_url
from workers.registry import HandlerRecord, read_registry_sync

F = TypeVar("F", bound=Callable[..., Any])


def redis_url_option(func: F) -> F:
    return click.option(
        "--redis-url",
        default=None,
        metavar="URL",
        help="Redis URL (default: $SEAWALL_REDIS_URL, then the app's, then redis://localhost:6379/0).",
    )(func)


def sync_client(redis_url: str | None, app_url: str | None = None) -> redis.Redis:
    """A client for the CLI; fails with exit code 1 and a redacted URL if Redis does not answer."""
    url = resolve_url(redis_url, app_url)
    try:
        client = connect_sync(url)
        ping_sync(client)
    except (redis.RedisError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot reach Redis at {redact(url)}: {describe(exc)}"
                                   ) from None
    return client


def load_handlers(client: redis.Redis) -> dict[str, HandlerRecord]:
    return read_registry_sync(client)


def find_handler(client: redis.Redis, name: str) -> HandlerRecord:
    """The registry record of handler ``name``, or a usage error listing the known ones."""
    handlers = load_handlers(client)
    if name in handlers:
        return handlers[name]
    known = ", ".join(handlers) or "none registered yet (start the app once with `seawall run`)"
    raise click.BadParameter(f"unknown handler {name!r}; known handlers: {known}",
                             param_hint="--handler")
