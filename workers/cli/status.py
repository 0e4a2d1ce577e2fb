"""``seawall status``: every handler's backlog, every pool's live processes, and how many
sagas of each type are in each state."""

from __future__ import annotations

import json
import time

import click

from workers.cli.common import redis_url_option, sync_client
from workers.cli.table import render_table
from workers.status import HandlerStatus, SagaStatus, StatusReport, collect

MAIN_OUTCOMES = ("ok", "retry", "dead_letter")
"""The kinds of settled outcome in the table's last column, as ``ok/retry/dead``; the
others follow it when there are any (``+12 parked``)."""


def settled(status: HandlerStatus) -> str:
    """The outcome counts as one cell: ``812/4/2``, or ``812/4/2 +37 parked``."""
    counts = status.outcomes
    cell = "/".join(str(counts.get(kind, 0)) for kind in MAIN_OUTCOMES)
    extras = [f"+{n} {kind}" for kind, n in counts.items() if n and kind not in MAIN_OUTCOMES]
    return " ".join([cell, *extras])


Rates = dict[str, dict[str, float]]
"""handler -> outcome kind -> messages per second."""


def rates(before: StatusReport, after: StatusReport, seconds: float) -> Rates:
    """Messages settled per second, by handler and outcome, between two reports (from the
    outcome counts, which the pools add to Redis every second); a count that went down
    (Redis lost it) gives 0."""
    if seconds <= 0:
        return {}
    previous = {h.name: h.outcomes for h in before.handlers}
    return {h.name: {kind: max(0, n - previous[h.name].get(kind, 0)) / seconds
                     for kind, n in h.outcomes.items()}
            for h in after.handlers if h.name in previous}


def rate_cell(per_kind: dict[str, float] | None) -> str:
    """``120.5/0.2/0``, and ``+3.1 parked`` for the other kinds when they move."""
    if per_kind is None:
        return "-"
    cell = "/".join(_per_second(per_kind.get(kind, 0.0)) for kind in MAIN_OUTCOMES)
    extras = [f"+{_per_second(r)} {kind}" for kind, r in per_kind.items()
              if r and kind not in MAIN_OUTCOMES]
    return " ".join([cell, *extras])


def _per_second(rate: float) -> str:
    return f"{rate:.1f}".rstrip("0").rstrip(".")


def saga_line(status: SagaStatus) -> list[str]:
    """One saga type's row: its name, then ``<state> <count>`` for every state."""
    return [status.name, *(f"{state} {n}" for state, n in status.counts.items())]


def render(report: StatusReport, per_second: Rates | None = None) -> str:
    """The tables; with ``per_second`` (``--watch``), a column of rates by outcome."""
    if not report.handlers:
        return "no handlers registered yet: start an app with `seawall run module:app`"
    rows = [[h.name, h.stream, h.pool, "-" if h.lag is None else str(h.lag), str(h.pending),
             str(h.retry_pending), str(h.delayed), str(h.dead_letters), str(h.consumers),
             h.breaker or "-", settled(h)] for h in report.handlers]
    header = ["handler", "stream", "pool", "lag", "pending", "retrying", "delayed", "dead",
              "consumers", "breaker", "settled ok/retry/dead"]
    if any(h.node for h in report.handlers):  # on a Redis Cluster: where each stream lives
        header.insert(2, "node")
        for row, h in zip(rows, report.handlers, strict=True):
            row.insert(2, h.node or "-")
    if per_second is not None:
        header.append("msgs/s ok/retry/dead")
        for row, h in zip(rows, report.handlers, strict=True):
            row.append(rate_cell(per_second.get(h.name)))
    out = render_table(header, rows)
    pool_rows = [[p.app, p.name, str(p.alive), str(len(p.processes))] for p in report.pools]
    if pool_rows:
        out += "\n\n" + render_table(["app", "pool", "alive", "known processes"], pool_rows)
    if report.sagas:
        lines = [saga_line(s) for s in report.sagas]
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        out += "\n\nsagas:\n" + "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines)
    return out


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--watch", type=click.FloatRange(min=0.2), default=None, metavar="SECONDS",
              help="Refresh every SECONDS until interrupted.")
@redis_url_option
def status(as_json: bool, watch: float | None, redis_url: str | None) -> None:
    """Per handler: stream (on a Redis Cluster, also the node it lives on), pool, group
    lag, pending, retries, dead letters, and how many messages were settled (ok / retried
    / dead-lettered), with --watch also per second; per pool: processes; per saga type:
    sagas in each state."""
    client = sync_client(redis_url)
    last: tuple[StatusReport, float] | None = None
    while True:
        report, at = collect(client), time.monotonic()
        if as_json:
            click.echo(json.dumps(report.to_json(), indent=2))
        else:
            if watch:
                click.clear()
            per_second = (None if not watch else {} if last is None
                          else rates(last[0], report, at - last[1]))
            click.echo(render(report, per_second))
        if not watch:
            return
        last = (report, at)
        time.sleep(watch)
