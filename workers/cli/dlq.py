"""``seawall dlq``: list, show, replay and purge each handler's dead letters.

Handlers are found in the registry in Redis (written when the app starts), or in the app
itself with ``--app module:attr``, so an operator needs nothing but the Redis URL. Every
move goes through the Lua scripts of ``queues.dead_letters``: a replay moves each dead
letter to the handler's own retry stream (never the user's stream, which would hand the
message again to every other handler) in small batches, so killing the command half-way
and running it again neither loses nor doubles a message. ``--all`` streams through the
dead letters a page at a time (XRANGE cursors), filtering each page, so a replay or purge
of a million needs the memory of one page; ``list`` without ``--handler`` reads the counts
by error type the scripts keep (``--scan`` reads every dead letter instead).

Times are shown in UTC. ``--since``/``--until``/``--before`` take ISO 8601 (a time without
an offset is UTC) or an age such as ``30m``, ``2h``, ``7d``.

Exit codes: 0 ok, 1 failure (including a refused or declined bulk operation), 2 usage.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
import redis
import redis.asyncio as aioredis

from queues.connect_errors import describe
from queues.connection import connect, redact, resolve_url
from queues.dead_letters import (
    BATCH,
    ERROR_TYPE,
    DeadLetter,
    check_entry_id,
    count_by_error_type,
    get_dead_letter,
    iter_dead_letters,
    purge,
    replay,
    stored_counts,
)
from workers.cli.common import find_handler, load_handlers, redis_url_option, sync_client
from workers.cli.table import render_table
from workers.cli.terminal import printable, printable_json
from workers.registry import HandlerRecord

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# -- options shared by every subcommand -------------------------------------------------


def _app_option(func: F) -> F:
    return click.option(
        "--app", "app_path", default=None, metavar="MODULE:ATTR",
        help="Find handlers in this app instead of the registry in Redis.",
    )(func)


def _handler_option(required: bool) -> Callable[[F], F]:
    return click.option("--handler", "-H", "handler_name", required=required, metavar="NAME",
                        help="The handler whose dead letters to use.")


_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_instant(text: str, *, now: datetime | None = None) -> int:
    """ms since the epoch of ISO 8601 text (no offset = UTC) or of an age (``30m``, ``2h``,
    ``7d``: that long before ``now``). ValueError, with the accepted forms, otherwise."""
    text = text.strip()
    age = _AGE.match(text)
    if age:
        delta = timedelta(**{_UNITS[age.group(2)]: float(age.group(1))})
        return int(((now or datetime.now(UTC)) - delta).timestamp() * 1000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither ISO 8601 (2024-05-01T12:00:00Z) nor an age (30m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _filter_options(func: F) -> F:
    func = click.option("--until", "until_ms", metavar="TIME", default=None, callback=_instant,
                        help="Only dead letters that failed at or before this time.")(func)
    func = click.option("--since", "since_ms", metavar="TIME", default=None, callback=_instant,
                        help="Only dead letters that failed at or after this time.")(func)
    return click.option("--error-type", default=None, metavar="TYPE",
                        help="Only dead letters whose error has this class name.")(func)


# -- finding handlers and talking to Redis ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scope:
    url: str
    handlers: dict[str, HandlerRecord]


def _load_app_records(app_path: str, redis_url: str | None) -> _Scope:
    """The hook for ``--app``: the app's own handler records and Redis URL."""
    from workers.errors import ConfigError
    from workers.loader import load_app

    try:
        app = load_app(app_path)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--app") from None
    return _Scope(app.url(redis_url), {r.name: r for r in app.records()})


def _scope(redis_url: str | None, app_path: str | None) -> _Scope:
    if app_path is not None:
        return _load_app_records(app_path, redis_url)
    client = sync_client(redis_url)
    try:
        return _Scope(resolve_url(redis_url), load_handlers(client))
    finally:
        client.close()


def _handler(redis_url: str | None, app_path: str | None, name: str) -> tuple[str, HandlerRecord]:
    """The URL and the record of handler ``name``; a usage error naming the known ones."""
    if app_path is not None:
        scope = _load_app_records(app_path, redis_url)
        if name not in scope.handlers:
            known = ", ".join(sorted(scope.handlers)) or "none"
            raise click.BadParameter(f"unknown handler {name!r}; the app has: {known}",
                                     param_hint="--handler")
        return scope.url, scope.handlers[name]
    client = sync_client(redis_url)
    try:
        return resolve_url(redis_url), find_handler(client, name)
    finally:
        client.close()


def _run(url: str, work: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """Run ``work`` with an asyncio client (the scripts' wrappers are async); Redis errors
    become exit code 1 with the URL's password hidden."""

    async def main() -> T:
        client = connect(url)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    except (redis.RedisError, OSError) as exc:
        raise click.ClickException(f"Redis at {redact(url)}: {describe(exc)}") from None


# -- output -----------------------------------------------------------------------------


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _short(text: str, width: int = 60) -> str:
    """The first line of ``text`` (control characters escaped first, so that a ``\\r``
    neither ends the line nor reaches the terminal), cut to ``width``."""
    text = printable(text).strip()
    line = text.split("\n", 1)[0] if text else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _letters_table(letters: Sequence[DeadLetter]) -> str:
    return render_table(
        ["ID", "HANDLER", "ERROR TYPE", "MESSAGE", "ATTEMPTS", "FAILED AT"],
        [[d.entry_id, d.handler, d.error_type or "?", _short(d.error), str(d.attempts),
          _when(d.failed_at_ms)] for d in letters],
    )


def _jsonl(obj: Any) -> str:
    return printable_json(json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                                     default=str))


# -- the commands -----------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead letters (messages whose handler failed for good)."""


@dlq.command("list")
@_handler_option(required=False)
@_filter_options
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="At most this many dead letters, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--scan", is_flag=True,
              help="Without --handler: count by reading every dead letter instead of the "
                   "counts the scripts keep.")
@_app_option
@redis_url_option
def list_(handler_name: str | None, error_type: str | None, since_ms: int | None,
          until_ms: int | None, limit: int, as_json: bool, scan: bool, app_path: str | None,
          redis_url: str | None) -> None:
    """List one handler's dead letters, or count every handler's by error type."""
    if handler_name is None:
        _summary(redis_url, app_path, error_type, since_ms, until_ms, as_json, scan)
        return
    url, record = _handler(redis_url, app_path, handler_name)

    async def work(client: aioredis.Redis) -> list[DeadLetter]:
        return [d async for d in iter_dead_letters(
            client, dlq_key=record.keys.dlq, error_type=error_type, since_ms=since_ms,
            until_ms=until_ms, limit=limit, newest_first=True)]

    letters = _run(url, work)
    if as_json:
        for letter in letters:
            click.echo(_jsonl(letter.to_dict()))
    elif letters:
        click.echo(_letters_table(letters))
    else:
        click.echo(f"no dead letters for {record.name}")


def _summary(redis_url: str | None, app_path: str | None, error_type: str | None,
             since_ms: int | None, until_ms: int | None, as_json: bool, scan: bool) -> None:
    scope = _scope(redis_url, app_path)
    records = list(scope.handlers.values())

    async def counts_of(client: aioredis.Redis, record: HandlerRecord) -> dict[str, int]:
        # The counts the scripts keep answer without a scan; a time range, --scan, or
        # dead letters written before the counts existed (they disagree with XLEN) read
        # the stream, a page at a time.
        if not scan and since_ms is None and until_ms is None:
            kept = await stored_counts(client, dlq_key=record.keys.dlq)
            if kept is not None:
                return kept
        return await count_by_error_type(client, dlq_key=record.keys.dlq, since_ms=since_ms,
                                         until_ms=until_ms)

    async def work(client: aioredis.Redis) -> list[dict[str, int]]:
        return [await counts_of(client, r) for r in records]

    counts = _run(scope.url, work)
    if error_type is not None:
        counts = [{k: v for k, v in c.items() if k == error_type} for c in counts]
    if as_json:
        for record, by_type in zip(records, counts, strict=True):
            click.echo(_jsonl({"handler": record.name, "stream": record.stream,
                               "total": sum(by_type.values()), "by_error_type": by_type}))
        return
    if not records:
        click.echo("no handlers registered yet (start the app once with `seawall run`, "
                   "or pass --app)")
        return
    rows: list[list[str]] = []
    for record, by_type in zip(records, counts, strict=True):
        if not by_type:
            rows.append([record.name, record.stream, "-", "0"])
        rows.extend([record.name, record.stream, t, str(n)] for t, n in by_type.items())
    click.echo(render_table(["HANDLER", "STREAM", "ERROR TYPE", "COUNT"], rows))


@dlq.command()
@click.argument("entry_id", metavar="ID")
@_handler_option(required=True)
@click.option("--json", "as_json", is_flag=True, help="The entry as one JSON object.")
@_app_option
@redis_url_option
def show(entry_id: str, handler_name: str, as_json: bool, app_path: str | None,
         redis_url: str | None) -> None:
    """Show one dead letter in full: metadata, headers, payload and traceback."""
    _check_ids([entry_id])
    url, record = _handler(redis_url, app_path, handler_name)
    letter = _run(url, lambda c: get_dead_letter(c, dlq_key=record.keys.dlq, entry_id=entry_id))
    if letter is None:
        raise click.ClickException(f"no dead letter {entry_id} for {record.name}")
    data = letter.to_dict()
    if as_json:
        click.echo(printable_json(json.dumps(data, indent=2, ensure_ascii=False, default=str)))
        return
    meta = [
        ("id", letter.entry_id), ("handler", letter.handler or record.name),
        ("stream", letter.stream or record.stream), ("origin entry", letter.origin_entry_id),
        ("message id", letter.message_id), ("attempts", str(letter.attempts)),
        ("error type", letter.error_type), ("error", letter.error),
        ("reason", letter.reason), ("first failed", _when(letter.first_failed_at_ms)),
        ("failed at", _when(letter.failed_at_ms)), ("consumer", letter.consumer),
        ("host", letter.host),
    ]
    # Everything below comes from producers and handlers: control characters are escaped.
    width = max(len(k) for k, _ in meta)
    for key, value in meta:
        lines = printable(value).split("\n")
        click.echo(f"{key.ljust(width)}  {lines[0]}")
        for line in lines[1:]:
            click.echo(f"{'':{width}}  {line}")
    if data["headers"]:
        click.echo("\nheaders:")
        for key, value in sorted(data["headers"].items()):
            click.echo(f"  {printable(str(key), one_line=True)}: "
                       f"{printable(str(value), one_line=True)}")
    click.echo("\npayload:")
    click.echo(printable_json(json.dumps(data["payload"], indent=2, ensure_ascii=False,
                                         default=str)))
    if letter.traceback:
        click.echo("\ntraceback:")
        click.echo(printable(letter.traceback.rstrip()))


def _check_ids(ids: Sequence[str]) -> None:
    for entry_id in ids:
        try:
            check_entry_id(entry_id)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--id") from None


def _selection_mode(ids: Sequence[str], select_all: bool) -> None:
    if bool(ids) == select_all:
        raise click.UsageError("pass either --id ID (repeatable) or --all")
    _check_ids(ids)


async def _select(client: aioredis.Redis, record: HandlerRecord, ids: Sequence[str],
                  *, error_type: str | None, since_ms: int | None, until_ms: int | None,
                  limit: int | None) -> tuple[list[DeadLetter], list[str]]:
    """The dead letters named by ``--id`` (a few, typed by a person) that pass the filters,
    and the ``--id``s that are not there. ``--all`` streams instead: :func:`_pages`."""
    chosen, missing = [], []
    for entry_id in dict.fromkeys(ids):
        letter = await get_dead_letter(client, dlq_key=record.keys.dlq, entry_id=entry_id)
        if letter is None:
            missing.append(entry_id)
        elif ((error_type is None or letter.error_type == error_type)
              and (since_ms is None or letter.dead_lettered_at_ms >= since_ms)
              and (until_ms is None or letter.dead_lettered_at_ms <= until_ms)):
            chosen.append(letter)
    return chosen[:limit] if limit is not None else chosen, missing


#: Dead letters read per XRANGE page by ``--all``: memory stays that of one page, whatever
#: the size of the DLQ.
PAGE = 500
#: Dead letters a dry run of ``--all`` shows (it counts them all).
SHOWN = 100

_ERROR_TYPE = ERROR_TYPE.encode()


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


async def _pages(client: aioredis.Redis, dlq_key: str, *, error_type: str | None,
                 since_ms: int | None, until_ms: int | None,
                 limit: int | None) -> AsyncIterator[list[str]]:
    """The ids of the dead letters matching the filters, oldest first, one XRANGE page of
    :data:`PAGE` at a time (filtered per page, nothing kept between pages); stops at
    ``limit`` or at the end of the range. Without ``until_ms`` the range ends at the last
    dead letter there when it starts, so letters added meanwhile are not chased. The
    caller may move or delete each page before asking for the next: the cursor is the last
    id read, exclusive."""
    low = "-" if since_ms is None else str(max(0, since_ms))
    if until_ms is not None:
        high = str(max(0, until_ms))
    else:
        last: Any = await client.xrevrange(dlq_key, "+", "-", count=1)
        if not last:
            return
        high = _s(last[0][0])
    left = limit
    while left is None or left > 0:
        rows: Any = await client.xrange(dlq_key, low, high, count=PAGE)
        if not rows:
            return
        ids = [_s(raw_id) for raw_id, fields in rows
               if error_type is None or _s(fields.get(_ERROR_TYPE, b"")) == error_type]
        if left is not None:
            ids = ids[:left]
            left -= len(ids)
        if ids:
            yield ids
        if len(rows) < PAGE:
            return
        low = f"({_s(rows[-1][0])}"


async def _once(ids: list[str]) -> AsyncIterator[list[str]]:
    yield ids


async def _estimate(client: aioredis.Redis, dlq_key: str, *, error_type: str | None,
                    since_ms: int | None, until_ms: int | None,
                    limit: int | None) -> tuple[int, bool]:
    """How many dead letters ``--all`` with these filters takes, without reading them
    (XLEN, or the kept counts for an error type), and whether that is exact: with a time
    range, or without trustworthy counts, it is an upper bound."""
    exact = since_ms is None and until_ms is None
    if error_type is None:
        n = int(await client.xlen(dlq_key))
    else:
        kept = await stored_counts(client, dlq_key=dlq_key)
        if kept is None:
            n, exact = int(await client.xlen(dlq_key)), False
        else:
            n = kept.get(error_type or "?", 0)
    if limit is not None and n >= limit:
        n = limit
    return n, exact


async def _in_batches(pages: AsyncIterator[list[str]], action: Callable[[list[str]],
                      Awaitable[int]], *, total: int, label: str,
                      rate: float | None) -> tuple[int, int]:
    """Apply ``action`` (a replay or a purge: how many it did) to the ids of ``pages``, in
    batches of :data:`BATCH` (fewer under ``rate``), a progress bar counting as it goes.
    Returns (ids taken, ids done)."""
    batch = BATCH if rate is None else max(1, min(BATCH, int(rate)))
    seen = done = 0
    started = time.monotonic()
    with ExitStack() as stack:
        bar = (stack.enter_context(click.progressbar(length=total, label=label,
                                                     file=sys.stderr))
               if total > batch else None)
        async for page in pages:
            for start in range(0, len(page), batch):
                part = page[start : start + batch]
                done += await action(part)
                seen += len(part)
                if bar is not None:
                    bar.update(len(part))
                await asyncio.sleep(pause_for(seen, rate, time.monotonic() - started))
    return seen, done


def _is_terminal() -> bool:
    return sys.stdin.isatty()


def _confirm_bulk(question: str, refusal: str) -> None:
    """Ask on a terminal; without one (a script, a pipe), refuse with exit code 1: a bulk
    change nobody confirmed is more likely a mistake than an intent."""
    if not _is_terminal():
        raise click.ClickException(f"{refusal}: pass --yes (no terminal to confirm on)")
    if not click.confirm(question, default=False):
        raise click.ClickException("nothing done")


def pause_for(done: int, rate: float | None, elapsed: float) -> float:
    """Seconds to wait so that ``done`` messages in ``elapsed`` seconds stay under ``rate``
    per second. Pure, so the pacing is tested without sleeping."""
    if not rate:
        return 0.0
    return max(0.0, done / rate - elapsed)


@dlq.command("replay")
@_handler_option(required=True)
@click.option("--id", "ids", multiple=True, metavar="ID", help="A dead letter to replay.")
@click.option("--all", "select_all", is_flag=True,
              help="Every dead letter of the handler (narrowed by the filters).")
@_filter_options
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many, oldest first.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="At most this many messages per second.")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before a bulk replay.")
@_app_option
@redis_url_option
def replay_(handler_name: str, ids: tuple[str, ...], select_all: bool, error_type: str | None,
            since_ms: int | None, until_ms: int | None, limit: int | None, rate: float | None,
            dry_run: bool, yes: bool, app_path: str | None, redis_url: str | None) -> None:
    """Send dead letters back to the handler, through its own retry stream, attempt 1."""
    _selection_mode(ids, select_all)
    url, record = _handler(redis_url, app_path, handler_name)
    keys = record.keys
    filters: dict[str, Any] = {"error_type": error_type, "since_ms": since_ms,
                               "until_ms": until_ms, "limit": limit}

    async def move(client: aioredis.Redis, part: list[str]) -> int:
        return len(await replay(client, dlq_key=keys.dlq, retry_stream=keys.retry,
                                entry_ids=part))

    if ids:
        chosen, missing = _run(url, lambda c: _select(c, record, ids, **filters))
        for entry_id in missing:
            click.echo(f"not found (already replayed or purged?): {entry_id}", err=True)
        if dry_run:
            click.echo(f"dry run: would replay {len(chosen)} dead letter(s) of {record.name} "
                       f"to {keys.retry}")
            if chosen:
                click.echo(_letters_table(chosen))
            return
        if not chosen:
            click.echo(f"nothing to replay for {record.name}")
            return
        to_move = [d.entry_id for d in chosen]
        seen, moved = _run(url, lambda c: _in_batches(
            _once(to_move), lambda part: move(c, part), total=len(to_move),
            label="replaying", rate=rate))
    else:
        if dry_run:
            _dry_run(url, record, "replay", f" to {keys.retry}", filters)
            return
        total, exact = _run(url, lambda c: _estimate(c, keys.dlq, **filters))
        if total == 0:
            click.echo(f"nothing to replay for {record.name}")
            return
        if not yes:
            many = f"{total}" if exact else f"up to {total}"
            _confirm_bulk(f"Replay {many} dead letter(s) of {record.name}?",
                          f"refusing to replay {many} dead letter(s) without confirmation")
        seen, moved = _run(url, lambda c: _in_batches(
            _pages(c, keys.dlq, **filters), lambda part: move(c, part), total=total,
            label="replaying", rate=rate))
        if seen == 0:
            click.echo(f"nothing to replay for {record.name}")
            return
    gone = seen - moved
    click.echo(f"replayed {moved} dead letter(s) of {record.name} to {keys.retry}"
               + (f"; {gone} had already gone" if gone else ""))


def _dry_run(url: str, record: HandlerRecord, verb: str, where: str,
             filters: dict[str, Any]) -> None:
    """What ``--all`` would take, counted a page at a time; the first :data:`SHOWN`."""

    async def work(client: aioredis.Redis) -> tuple[int, list[DeadLetter]]:
        n, shown = 0, list[DeadLetter]()
        async for letter in iter_dead_letters(client, dlq_key=record.keys.dlq,
                                              page_size=PAGE, **filters):
            n += 1
            if len(shown) < SHOWN:
                shown.append(letter)
        return n, shown

    n, shown = _run(url, work)
    click.echo(f"dry run: would {verb} {n} dead letter(s) of {record.name}{where}")
    if shown:
        click.echo(_letters_table(shown))
        if n > len(shown):
            click.echo(f"(the first {len(shown)} of {n} shown)")


@dlq.command("purge")
@_handler_option(required=True)
@click.option("--id", "ids", multiple=True, metavar="ID", help="A dead letter to delete.")
@click.option("--all", "select_all", is_flag=True, help="Every dead letter of the handler.")
@click.option("--before", "before_ms", metavar="TIME", default=None, callback=_instant,
              help="Only dead letters that failed before this time.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; required without a terminal.")
@_app_option
@redis_url_option
def purge_(handler_name: str, ids: tuple[str, ...], select_all: bool, before_ms: int | None,
           yes: bool, app_path: str | None, redis_url: str | None) -> None:
    """Delete dead letters for good."""
    _selection_mode(ids, select_all)
    url, record = _handler(redis_url, app_path, handler_name)
    dlq_key = record.keys.dlq
    until_ms = None if before_ms is None else before_ms - 1
    filters: dict[str, Any] = {"error_type": None, "since_ms": None, "until_ms": until_ms,
                               "limit": None}

    async def delete(client: aioredis.Redis, part: list[str]) -> int:
        return await purge(client, dlq_key=dlq_key, entry_ids=part)

    if ids:
        chosen, missing = _run(url, lambda c: _select(c, record, ids, **filters))
        for entry_id in missing:
            click.echo(f"not found: {entry_id}", err=True)
        total, exact = len(chosen), True
    else:
        total, exact = _run(url, lambda c: _estimate(c, dlq_key, **filters))
    if total == 0:
        click.echo(f"nothing to purge for {record.name}")
        return
    if not yes:
        many = f"{total}" if exact else f"up to {total}"
        _confirm_bulk(f"Delete {many} dead letter(s) of {record.name} for good?",
                      f"refusing to delete {many} dead letter(s) without confirmation")
    if ids:
        chosen_ids = [d.entry_id for d in chosen]
        _, removed = _run(url, lambda c: _in_batches(
            _once(chosen_ids), lambda part: delete(c, part), total=total, label="purging",
            rate=None))
    else:
        seen, removed = _run(url, lambda c: _in_batches(
            _pages(c, dlq_key, **filters), lambda part: delete(c, part), total=total,
            label="purging", rate=None))
        if seen == 0:
            click.echo(f"nothing to purge for {record.name}")
            return
    click.echo(f"purged {removed} dead letter(s) of {record.name}")


__all__ = ["dlq", "pause_for"]
