"""``seawall``: the command line. Exit codes: 0 ok, 1 failure, 2 usage error."""

from __future__ import annotations

import click

from workers.cli.acl import acl
from workers.cli.breaker import breaker
from workers.cli.demo import demo
from workers.cli.dlq import dlq
from workers.cli.health import health
from workers.cli.publish import publish
from workers.cli.run import run
from workers.cli.saga import saga
from workers.cli.status import status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="seawall")
def cli() -> None:
    """seawall: Redis Streams workers with bulkheads, circuit breakers and dead letters."""


for command in (run, publish, status, dlq, breaker, saga, health, demo, acl):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="seawall")
