"""``seawall breaker list|open|close|reset``: see and steer the fleet's circuit breakers.

A breaker's state is one hash in Redis, shared by every process, so a command here takes
effect on the whole fleet at its next read. Commands go through the same Lua scripts as the
workers (``queues.breaker_store``) and use the Redis server's clock, like the workers do.
"""

from __future__ import annotations

import json
from typing import Any

import click
import redis

from queues import breaker_store as store
from queues.connection import server_time_ms_sync
from workers.cli.common import find_handler, load_handlers, redis_url_option, sync_client
from workers.cli.table import render_table
from workers.registry import HandlerRecord


def _row(record: HandlerRecord, snap: store.BreakerSnapshot | None, now_ms: int) -> dict[str, Any]:
    row: dict[str, Any] = {"handler": record.name, "stream": record.stream, "pool": record.pool}
    if snap is None:
        return {**row, "state": "none", "failure_rate": None, "slow_rate": None, "calls": None,
                "window": None, "open_until_ms": None, "half_open_in": None}
    config = record.breaker or {}
    half_open_in = None
    if snap.state in (store.OPEN, store.FORCED_OPEN) and snap.open_until_ms is not None:
        half_open_in = max(0, snap.open_until_ms - now_ms) / 1000
    return {**row, "state": snap.state, "failure_rate": snap.failure_rate,
            "slow_rate": snap.slow_rate, "calls": snap.calls, "window": config.get("window"),
            "open_until_ms": snap.open_until_ms, "half_open_in": half_open_in}


def _render(rows: list[dict[str, Any]]) -> str:
    cells = []
    for r in rows:
        if r["state"] == "none":
            cells.append([r["handler"], "none", "-", "-", "-", "-"])
            continue
        if r["half_open_in"] is not None:
            due = f"{r['half_open_in']:.1f}s"
        else:
            due = "until closed" if r["state"] == store.FORCED_OPEN else "-"
        window = r["window"] if r["window"] is not None else "?"
        cells.append([r["handler"], r["state"], f"{r['failure_rate']:.0%}",
                      f"{r['slow_rate']:.0%}", f"{r['calls']}/{window}", due])
    return render_table(["handler", "state", "failures", "slow", "calls", "half-open in"], cells)


@click.group()
def breaker() -> None:
    """Circuit breakers: list them, force them open, close or reset them (fleet-wide)."""


@breaker.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per handler, in a list.")
@redis_url_option
def list_(as_json: bool, redis_url: str | None) -> None:
    """Every registered handler's breaker: state, failure and slow rates, calls in the window,
    and how long until an open breaker lets probes through."""
    client = sync_client(redis_url)
    try:
        now_ms = server_time_ms_sync(client)
        rows = []
        for record in load_handlers(client).values():
            snap = None
            if record.breaker is not None:
                snap = store.read_state_sync(client, record.keys)
            rows.append(_row(record, snap, now_ms))
    except redis.RedisError as exc:
        raise click.ClickException(f"reading the breakers failed: {exc}") from None
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(_render(rows))
    else:
        click.echo("no handlers registered yet (start the app once with `seawall run`)")


def _with_breaker(client: redis.Redis, name: str) -> HandlerRecord:
    record = find_handler(client, name)
    if record.breaker is None:
        raise click.ClickException(f"handler {name!r} has no circuit breaker (breaker=None)")
    return record


@breaker.command("open")
@click.argument("handler")
@click.option("--for", "seconds", type=click.FloatRange(min=0.001), default=None,
              metavar="SECONDS", help="Let probes through after this long (default: stay open "
              "until `seawall breaker close`).")
@redis_url_option
def open_(handler: str, seconds: float | None, redis_url: str | None) -> None:
    """Force HANDLER's breaker open: every consumer stops reading; messages wait."""
    client = sync_client(redis_url)
    try:
        record = _with_breaker(client, handler)
        duration_ms = None if seconds is None else max(1, round(seconds * 1000))
        store.force_open_sync(client, record.keys, duration_ms=duration_ms)
    except redis.RedisError as exc:
        raise click.ClickException(f"opening the breaker failed: {exc}") from None
    finally:
        client.close()
    until = f"for {seconds:g}s, then half-open" if seconds is not None else "until closed"
    click.echo(f"breaker of {handler} forced open {until}")


@breaker.command("close")
@click.argument("handler")
@redis_url_option
def close(handler: str, redis_url: str | None) -> None:
    """Close HANDLER's breaker with an empty window: consumers read again at once."""
    client = sync_client(redis_url)
    try:
        store.force_close_sync(client, _with_breaker(client, handler).keys)
    except redis.RedisError as exc:
        raise click.ClickException(f"closing the breaker failed: {exc}") from None
    finally:
        client.close()
    click.echo(f"breaker of {handler} closed")


@breaker.command("reset")
@click.argument("handler")
@redis_url_option
def reset(handler: str, redis_url: str | None) -> None:
    """Forget HANDLER's breaker state and history: closed, as new."""
    client = sync_client(redis_url)
    try:
        store.reset_sync(client, _with_breaker(client, handler).keys)
    except redis.RedisError as exc:
        raise click.ClickException(f"resetting the breaker failed: {exc}") from None
    finally:
        client.close()
    click.echo(f"breaker of {handler} reset")
