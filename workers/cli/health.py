"""``seawall health``: exec probes for Kubernetes (or any supervisor of supervisors).

It asks the ``seawall run`` on this host, on its ``--metrics-port``, and never imports the
app nor touches Redis itself:

    seawall health --live     # /livez: the supervisor's loop runs, no pool crash-loops
    seawall health --ready    # /readyz: Redis answers and every pool process consumes

Exit codes: 0 ok, 1 not ok (or no supervisor answering), 2 usage (no port given).
"""

from __future__ import annotations

import sys

import click

from workers.observability.probe import LIVE, METRICS_PORT_ENV, READY, ask


@click.command()
@click.argument("app_path", metavar="[APP]", required=False)
@click.option("--live", "check", flag_value=LIVE, default=True,
              help="Is the supervisor alive? (the default)")
@click.option("--ready", "check", flag_value=READY,
              help="Is every pool consuming, with Redis answering?")
@click.option("--metrics-port", type=click.IntRange(min=1, max=65535), default=None,
              envvar=METRICS_PORT_ENV, show_envvar=True, metavar="PORT",
              help="The supervisor's --metrics-port.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Where the supervisor listens.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              metavar="SECONDS", help="How long to wait for the supervisor's answer.")
def health(app_path: str | None, check: str, metrics_port: int | None, host: str,
           timeout: float) -> None:
    """Exit 0 if the `seawall run` serving --metrics-port is alive (--live, the default) or
    ready (--ready), 1 if not, 2 on a usage error. APP (module:attribute) is not imported:
    given, it must be the app that supervisor runs."""
    if metrics_port is None:
        raise click.UsageError(f"give the supervisor's --metrics-port (or set "
                               f"{METRICS_PORT_ENV})")
    answer = ask(host, metrics_port, check, timeout)
    what = "alive" if check == LIVE else "ready"
    if answer.ok and app_path is not None and answer.app not in (None, app_path):
        click.echo(f"not {what}: port {metrics_port} serves {answer.app}, not {app_path}")
        sys.exit(1)
    if answer.ok:
        click.echo(what)
        sys.exit(0)
    click.echo(f"not {what}: " + "; ".join(answer.problems))
    sys.exit(1)
