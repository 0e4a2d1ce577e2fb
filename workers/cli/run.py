"""``seawall run APP``: start the supervisor and every pool (or the ``--pool`` ones)."""

from __future__ import annotations

import logging
import os
import sys

import click

from queues import server_config
from queues.connection import redact
from workers import cluster_checks, logs
from workers.cli.common import redis_url_option
from workers.errors import ConfigError
from workers.loader import load_app
from workers.observability.health import STUCK_AFTER
from workers.observability.probe import METRICS_PORT_ENV
from workers.observability.totals import HandlerLabels
from workers.runtime.supervisor import Supervisor

log = logging.getLogger("seawall.supervisor")


def check_redis(url: str) -> None:
    """Warn about a Redis that can lose seawall's data silently (an eviction policy, no
    persistence), or that the check could not be made; exit 1 for a failure that waiting
    will not cure (a refused certificate, a wrong password). A Redis that does not answer
    yet is not an error: the pools wait for it."""
    try:
        found = server_config.check(url)
    except server_config.Unreachable as exc:
        raise click.ClickException(f"cannot use Redis at {redact(url)}: {exc}") from None
    for warning in found:
        log.warning(warning)


@click.command()
@click.argument("app_path", metavar="APP")
@click.option("--pool", "pools", multiple=True, metavar="NAME",
              help="Run only this pool (repeatable). Default: every pool.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Override every selected pool's concurrency.")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="Override every selected pool's number of processes.")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds running handlers get to finish after the first SIGTERM/SIGINT.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["json", "text"]), default=None,
              help="Default: text on a terminal, JSON lines otherwise.")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
              envvar=METRICS_PORT_ENV, show_envvar=True, metavar="PORT",
              help="Serve /metrics, /livez and /readyz on this port (one per deployment; "
                   "pool processes open none).")
@click.option("--metrics-host", default="0.0.0.0", show_default=True,
              help="Address the metrics port listens on.")
@click.option("--stuck-after", type=click.FloatRange(min=1), default=STUCK_AFTER,
              show_default=True, metavar="SECONDS",
              help="Kill and restart a pool process that has not reported for this long "
                   "(its event loop is blocked).")
@redis_url_option
def run(app_path: str, pools: tuple[str, ...], concurrency: int | None,
        processes: int | None, grace: float, log_level: str, log_format: str | None,
        metrics_port: int | None, metrics_host: str, stuck_after: float,
        redis_url: str | None) -> None:
    """Run the pools of APP (module:attribute), e.g. `seawall run shop.app:app`."""
    log_format = log_format or logs.default_format()
    os.environ["SEAWALL_LOG_FORMAT"] = log_format  # the pool processes log the same way
    logs.configure(log_level, log_format=log_format, role="supervisor")
    try:
        app = load_app(app_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    unknown = [p for p in pools if p not in app.pools]
    if unknown:
        raise click.BadParameter(
            f"unknown pool(s) {', '.join(unknown)}; this app has: {', '.join(sorted(app.pools))}",
            param_hint="--pool")
    selected = list(pools) or [p for p in app.pools if app.handlers_of(p)]
    if not selected:
        raise click.UsageError(f"{app_path} registers no handlers: nothing to run")
    slots = {p: processes or app.pools[p].processes for p in selected}
    url = app.url(redis_url)
    described = ", ".join(f"{p}x{n}" for p, n in slots.items())
    click.echo(f"seawall: running {app.name} pools {described} against {redact(url)}", err=True)
    check_redis(url)
    for warning in app.integrity.warnings():
        log.warning(warning)
    try:
        for warning in cluster_checks.check(url, [(r.name, r.keys) for pool in selected
                                                  for r in app.records_of(pool)]):
            log.warning(warning)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    handlers = [HandlerLabels(r.name, r.stream, r.pool, r.breaker is not None)
                for pool in selected for r in app.records_of(pool)]
    supervisor = Supervisor(app_path, slots, redis_url=url, grace=grace,
                            concurrency=concurrency, log_level=log_level, handlers=handlers,
                            metrics_port=metrics_port, metrics_host=metrics_host,
                            stuck_after=stuck_after)
    try:
        supervisor.hub.start()  # before any pool process: a taken port fails the command
    except OSError as exc:
        raise click.ClickException(f"cannot serve metrics on port {metrics_port}: {exc}"
                                   ) from None
    sys.exit(supervisor.run())
