"""``seawall saga list|show|abort|retry|skip``: find stuck sagas, read a saga's ledger, and
answer for a saga that needs a person.

Nothing here imports the user's app. The handler registry in Redis names every saga type:
its steps read ``seawall:{saga:<name>}:on:<stream>`` and its compensations
``seawall:{saga:<name>}:undo:<step>`` (``queues.saga_registry``), which is all the saga
scripts need to know of a saga type. ``abort``, ``retry`` and ``skip`` go through the same
scripts as the workers (``queues.saga_store``): each is one atomic step on the saga's ledger,
so an operator racing a worker (or a deadline sweeper) never leaves a half-changed saga.

Times are the caller's clock, as for the workers' saga scripts. Durations are written
``90s``, ``15m``, ``2h``, ``7d``.

Exit codes: 0 ok, 1 failure (no such saga, a saga not in a state that allows the command),
2 usage (a saga id found in several saga types without ``--saga``, an unknown saga type).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import redis
import redis.asyncio as aioredis

from queues import saga_store
from queues.connect_errors import describe
from queues.connection import connect, redact, resolve_url
from queues.keys import SagaKeys
from queues.saga_registry import DEFAULT_RETENTION_S, SagaType, saga_types
from workers.cli.common import load_handlers, redis_url_option, sync_client
from workers.cli.table import render_table
from workers.cli.terminal import printable, printable_json

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# -- parsing and formatting (pure) ----------------------------------------------------------

def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``2h``, ``7d``, ``1w``; ValueError naming the forms."""
    found = _DURATION.match(text.strip())
    if not found:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 2h, 7d")
    return float(found.group(1)) * _SECONDS[found.group(2)]


def format_age(seconds: float) -> str:
    """``4.2s``, ``42s``, ``12m05s``, ``3h07m``, ``2d04h``."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _short(text: str, width: int = 60) -> str:
    """The first line of ``text`` (control characters escaped first, so that a ``\\r``
    neither ends the line nor reaches the terminal), cut to ``width``."""
    text = printable(text).strip()
    line = text.split("\n", 1)[0] if text else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _script_message(exc: redis.ResponseError) -> str:
    """A script's error reply without what Redis appends (``script: <sha>, on @user_...``)."""
    text = str(exc)
    cut = text.find(" script: ")
    return text[:cut] if cut > 0 else text


# -- the ledger, read ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StepView:
    step: str
    status: str
    at_ms: int | None
    error: str
    memo: str
    note: str

    def to_json(self) -> dict[str, Any]:
        try:
            memo: Any = json.loads(self.memo) if self.memo else None
        except ValueError:
            memo = self.memo
        return {"step": self.step, "status": self.status, "at_ms": self.at_ms,
                "error": self.error or None, "memo": memo, "note": self.note or None}


@dataclass(frozen=True, slots=True)
class SagaView:
    """One saga as ``show`` prints it."""

    saga: str
    saga_id: str
    ledger: dict[str, str]
    timeline: list[dict[str, str]]
    stack: list[str]
    undoable: tuple[str, ...] | None
    """The saga type's steps with a compensation, or None when the registry does not know
    the saga type (then every step on the stack is listed)."""

    @property
    def state(self) -> str:
        return self.ledger.get("state", "unknown")

    def steps(self) -> list[StepView]:
        """Each step the ledger knows, in the order the timeline first names it."""
        names = [k[len("step:"):] for k in self.ledger if k.startswith("step:")]
        order: dict[str, int] = {}
        for event in self.timeline:
            step = event.get("step", "")
            if step and step not in order:
                order[step] = len(order)
        names.sort(key=lambda s: (order.get(s, len(order)), s))
        led = self.ledger
        return [StepView(s, led.get(f"step:{s}", ""), _int(led.get(f"at:{s}")),
                         led.get(f"error:{s}", ""), led.get(f"memo:{s}", ""),
                         led.get(f"note:{s}", "")) for s in names]

    def to_compensate(self) -> list[str]:
        """The compensations still to run, next first: the one under way (or, for a failed
        saga, the one that failed), then the committed steps, last committed first. For a
        running saga: what would be compensated if it stopped now."""
        state, led = self.state, self.ledger
        if state in ("completed", "compensated", "unknown"):
            return []
        pending: list[str] = []
        if state == "failed":
            failed = led.get("failed_step", "")
            if failed and led.get(f"step:{failed}") == "undo_failed":
                pending.append(failed)
        elif state in ("compensating", "timed_out"):
            undoing = led.get("undoing", "")
            if undoing and led.get(f"step:{undoing}") == "compensating":
                pending.append(undoing)
        pending += reversed(self.stack)
        if self.undoable is not None:
            pending = [s for s in pending if s in self.undoable]
        return pending

    def to_json(self, now_ms: int) -> dict[str, Any]:
        led = self.ledger
        updated = _int(led.get("updated_at"))
        return {
            "saga": self.saga, "saga_id": self.saga_id, "state": self.state,
            "started_at_ms": _int(led.get("started_at")), "state_since_ms": updated,
            "in_state_s": None if updated is None else max(0, now_ms - updated) / 1000,
            "cause": led.get("cause") or None, "failed_step": led.get("failed_step") or None,
            "deadline_ms": _int(led.get("deadline_ms")),
            "undoing": led.get("undoing") or None,
            "steps": [s.to_json() for s in self.steps()],
            "timeline": [{"event": e.get("event", ""), "step": e.get("step") or None,
                          "detail": e.get("detail") or None, "at_ms": _int(e.get("at"))}
                         for e in self.timeline],
            "to_compensate": self.to_compensate(),
        }


def _deadline(deadline_ms: int | None, now_ms: int) -> str:
    if not deadline_ms:
        return "none"
    left = (deadline_ms - now_ms) / 1000
    when = f"in {format_age(left)}" if left > 0 else f"{format_age(-left)} ago"
    return f"{_when(deadline_ms)} ({when})"


def render_view(view: SagaView, now_ms: int) -> str:
    led = view.ledger
    started = _int(led.get("started_at"))
    updated = _int(led.get("updated_at"))
    state = view.state
    if updated is not None:
        state += f" for {format_age((now_ms - updated) / 1000)}"
    meta = [("saga", view.saga), ("id", view.saga_id), ("state", state),
            ("started", "-" if started is None else
             f"{_when(started)} ({format_age((now_ms - started) / 1000)} ago)"),
            ("cause", led.get("cause") or "-"), ("failed step", led.get("failed_step") or "-"),
            ("deadline", _deadline(_int(led.get("deadline_ms")), now_ms))]
    width = max(len(k) for k, _ in meta)
    # Causes, errors, memos and step names come from handlers and payloads: control
    # characters are escaped (tables escape their cells).
    lines = [f"{k.ljust(width)}  {printable(v, one_line=True)}" for k, v in meta]
    steps = view.steps()
    if steps:
        lines += ["", "steps:", render_table(
            ["step", "status", "at", "error", "memo"],
            [[s.step, s.status, _offset(s.at_ms, started), _short(s.error, 50) or "-",
              _short(s.memo + (f"  (note: {s.note})" if s.note else ""), 60) or "-"]
             for s in steps])]
    if view.timeline:
        lines += ["", "timeline:", render_table(
            ["at", "event", "step", "detail"],
            [[_offset(_int(e.get("at")), started), e.get("event", ""), e.get("step") or "-",
              _short(e.get("detail", ""), 70) or "-"] for e in view.timeline])]
    pending = view.to_compensate()
    label = ("compensations that would run if it stopped now" if view.state == "running"
             else "compensations still to run")
    listed = printable(", ".join(pending), one_line=True) if pending else "none"
    lines += ["", f"{label} (next first): {listed}"]
    return "\n".join(lines)


def _offset(at_ms: int | None, start_ms: int | None) -> str:
    """A time as an offset from the saga's start: ``+0.31s``, ``+12m05s``."""
    if at_ms is None:
        return "-"
    if start_ms is None:
        return _when(at_ms)
    delta = (at_ms - start_ms) / 1000
    return f"+{delta:.2f}s" if delta < 10 else f"+{format_age(delta)}"


# -- finding saga types and sagas ------------------------------------------------------------

def _types(client: redis.Redis) -> dict[str, SagaType]:
    return saga_types((r.name, r.stream) for r in load_handlers(client).values())


def _saga_keys(name: str) -> SagaKeys:
    try:
        return SagaKeys(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--saga") from None


def _known(types: dict[str, SagaType]) -> str:
    return ", ".join(types) or "none registered yet (start the app once with `seawall run`)"


def _locate(client: redis.Redis, types: dict[str, SagaType], saga_id: str,
            saga_name: str | None) -> SagaKeys:
    """The saga type holding ``saga_id``: ``--saga``, else the one registered saga type
    that has a ledger for it (exit 1 if none has, 2 if several have)."""
    if saga_name is not None:
        keys = _saga_keys(saga_name)
        if not client.exists(keys.ledger(saga_id)):
            raise click.ClickException(f"no saga {saga_id!r} of type {saga_name!r} (never "
                                       "started, or finished longer ago than its retention)")
        return keys
    holders = [t.keys for t in types.values() if client.exists(t.keys.ledger(saga_id))]
    if len(holders) == 1:
        return holders[0]
    if not holders:
        raise click.ClickException(f"no saga {saga_id!r} in any registered saga type "
                                   f"({_known(types)}); pass --saga NAME for another")
    names = ", ".join(k.saga for k in holders)
    raise click.UsageError(f"saga id {saga_id!r} exists in several saga types ({names}): "
                           "pass --saga NAME")


def _registered(types: dict[str, SagaType], keys: SagaKeys) -> SagaType:
    """The registered saga type: the scripts need its compensations."""
    found = types.get(keys.saga)
    if found is None:
        raise click.BadParameter(
            f"saga type {keys.saga!r} has no handler in the registry, so its compensations "
            f"are unknown; registered saga types: {_known(types)}", param_hint="--saga")
    return found


def _run(url: str, work: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """Run ``work`` with an asyncio client (the scripts' wrappers are async). A script's
    refusal becomes its own message, exit code 1; other Redis errors name the URL."""

    async def main() -> T:
        client = connect(url)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    except redis.ResponseError as exc:
        raise click.ClickException(_script_message(exc)) from None
    except (redis.RedisError, OSError) as exc:
        raise click.ClickException(f"Redis at {redact(url)}: {describe(exc)}") from None


# -- shared options --------------------------------------------------------------------------

def _saga_option(func: F) -> F:
    return click.option("--saga", "saga_name", default=None, metavar="NAME",
                        help="The saga type (needed only when the id exists in several).")(func)


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _retention_option(func: F) -> F:
    return click.option(
        "--retention", default=f"{DEFAULT_RETENTION_S // 86400}d", show_default=True,
        metavar="DURATION", callback=_duration,
        help="The saga type's retention (Saga(retention=...)), for a saga this command "
             "finishes: how long its ledger stays as a tombstone.")(func)


# -- the commands ----------------------------------------------------------------------------

@click.group()
def saga() -> None:
    """Sagas: find stuck ones, read a ledger, abort, retry or skip a compensation."""


@saga.command("list")
@_saga_option
@click.option("--state", "states", multiple=True, type=click.Choice(saga_store.STATES),
              help="Only sagas in this state (repeatable). Default: every state.")
@click.option("--older-than", "older_than", default=None, metavar="DURATION",
              callback=_duration, help="Only sagas in their state for longer (90s, 15m, 2h).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="At most this many sagas, stalest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON list of objects.")
@redis_url_option
def list_(saga_name: str | None, states: tuple[str, ...], older_than: float | None,
          limit: int, as_json: bool, redis_url: str | None) -> None:
    """Sagas by state, stalest first (longest in their state): saga, id, state, for how
    long, why it stopped going forward, and the step that failed."""
    client = sync_client(redis_url)
    try:
        types = _types(client)
        if saga_name is not None:
            chosen = [_saga_keys(saga_name)]
        else:
            chosen = [t.keys for t in types.values()]
        now_ms = int(time.time() * 1000)
        cutoff = None if older_than is None else now_ms - int(older_than * 1000)
        entries: list[tuple[str, saga_store.SagaEntry]] = []
        for keys in chosen:
            entries += [(keys.saga, e) for e in saga_store.list_sync(
                client, keys, states=states or saga_store.STATES, older_than_ms=cutoff,
                limit=limit)]
        entries.sort(key=lambda pair: pair[1].since_ms)
        rows: list[dict[str, Any]] = []
        for name, entry in entries:
            if len(rows) == limit:
                break
            ledger = saga_store.ledger_sync(client, SagaKeys(name), entry.saga_id)
            if not ledger:
                continue  # an index entry whose ledger's retention ran out
            rows.append({"saga": name, "saga_id": entry.saga_id, "state": entry.state,
                         "since_ms": entry.since_ms,
                         "for_s": max(0, now_ms - entry.since_ms) / 1000,
                         "cause": ledger.get("cause") or None,
                         "failed_step": ledger.get("failed_step") or None,
                         "started_at_ms": _int(ledger.get("started_at"))})
    except redis.RedisError as exc:
        raise click.ClickException(f"reading the sagas failed: {exc}") from None
    finally:
        client.close()
    if as_json:
        click.echo(printable_json(json.dumps(rows, indent=2)))
    elif rows:
        click.echo(render_table(
            ["saga", "id", "state", "for", "cause", "failed step"],
            [[r["saga"], r["saga_id"], r["state"], format_age(r["for_s"]), r["cause"] or "-",
              r["failed_step"] or "-"] for r in rows]))
    elif not chosen:
        click.echo(f"no saga types: {_known(types)}")
    else:
        click.echo("no sagas match")


@saga.command()
@click.argument("saga_id", metavar="ID")
@_saga_option
@click.option("--json", "as_json", is_flag=True, help="The saga as one JSON object.")
@redis_url_option
def show(saga_id: str, saga_name: str | None, as_json: bool, redis_url: str | None) -> None:
    """One saga's ledger: its state, each step's status, error and memo, its timeline, and
    the compensations still to run."""
    client = sync_client(redis_url)
    try:
        types = _types(client)
        keys = _locate(client, types, saga_id, saga_name)
        known = types.get(keys.saga)
        view = SagaView(keys.saga, saga_id, saga_store.ledger_sync(client, keys, saga_id),
                        saga_store.timeline_sync(client, keys, saga_id),
                        saga_store.stack_sync(client, keys, saga_id),
                        None if known is None else known.undoable)
    except redis.RedisError as exc:
        raise click.ClickException(f"reading the saga failed: {exc}") from None
    finally:
        client.close()
    now_ms = int(time.time() * 1000)
    if as_json:
        click.echo(printable_json(json.dumps(view.to_json(now_ms), indent=2,
                                             ensure_ascii=False)))
    else:
        click.echo(render_view(view, now_ms))


def _target(redis_url: str | None, saga_id: str, saga_name: str | None,
            retention: float) -> tuple[str, saga_store.SagaLayout]:
    """The URL and the layout of the registered saga type holding ``saga_id``."""
    client = sync_client(redis_url)
    try:
        types = _types(client)
        keys = _locate(client, types, saga_id, saga_name)
        return resolve_url(redis_url), _registered(types, keys).layout(int(retention))
    except redis.RedisError as exc:
        raise click.ClickException(f"reading the registry failed: {exc}") from None
    finally:
        client.close()


def _after(url: str, layout: saga_store.SagaLayout, saga_id: str) -> str:
    """Where the saga stands now, in words."""
    ledger = _run(url, lambda c: saga_store.ledger(c, layout.keys, saga_id))
    state = ledger.get("state", "unknown")
    undoing = ledger.get("undoing", "")
    if state in ("compensating", "timed_out") and ledger.get(f"step:{undoing}") == "compensating":
        return f"{state}: undoing {undoing}"
    return state


@saga.command()
@click.argument("saga_id", metavar="ID")
@_saga_option
@_retention_option
@redis_url_option
def abort(saga_id: str, saga_name: str | None, retention: float, redis_url: str | None) -> None:
    """Stop a running saga: its committed steps compensate, last committed first. Exit 1
    if it was not running."""
    url, layout = _target(redis_url, saga_id, saga_name, retention)
    name = f"{layout.keys.saga}/{saga_id}"
    stopped = _run(url, lambda c: saga_store.abort(
        c, layout, saga_id, cause="aborted", only_if_due=False,
        now_ms=int(time.time() * 1000)))
    now = _after(url, layout, saga_id)
    if not stopped:
        raise click.ClickException(f"saga {name} is {now}, not running: nothing done")
    click.echo(f"saga {name} aborted; now {now}")


@saga.command()
@click.argument("saga_id", metavar="ID")
@_saga_option
@click.option("--note", default="", metavar="TEXT", help="Why, for the saga's timeline.")
@_retention_option
@redis_url_option
def retry(saga_id: str, saga_name: str | None, note: str, retention: float,
          redis_url: str | None) -> None:
    """Send the failed compensation of a failed saga again, with a fresh retry budget."""
    url, layout = _target(redis_url, saga_id, saga_name, retention)
    ledger = _run(url, lambda c: saga_store.ledger(c, layout.keys, saga_id))
    failed = ledger.get("failed_step", "")
    if ledger.get("state") == "failed" and failed not in layout.undoable:
        raise click.ClickException(
            f"the compensation of {failed} has no handler in the registry (start its pool "
            "once with `seawall run`), so it cannot be sent again from here")
    step = _run(url, lambda c: saga_store.resume(
        c, layout, saga_id, action="retry", note=note, now_ms=int(time.time() * 1000)))
    click.echo(f"saga {layout.keys.saga}/{saga_id}: the compensation of {step} sent again; "
               f"now {_after(url, layout, saga_id)}")


@saga.command()
@click.argument("saga_id", metavar="ID")
@click.option("--step", required=True, metavar="STEP",
              help="The step whose compensation failed (a check that you mean this saga).")
@click.option("--note", required=True, metavar="TEXT",
              help="What was done by hand, for the saga's timeline.")
@_saga_option
@_retention_option
@redis_url_option
def skip(saga_id: str, step: str, note: str, saga_name: str | None, retention: float,
         redis_url: str | None) -> None:
    """Record that a person undid STEP by hand (its compensation failed for good) and go on
    with the next compensation."""
    url, layout = _target(redis_url, saga_id, saga_name, retention)
    done = _run(url, lambda c: saga_store.resume(
        c, layout, saga_id, action="skip", step=step, note=note,
        now_ms=int(time.time() * 1000)))
    click.echo(f"saga {layout.keys.saga}/{saga_id}: {done} marked undone by hand; "
               f"now {_after(url, layout, saga_id)}")


__all__ = ["format_age", "parse_duration", "saga"]
