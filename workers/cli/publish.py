"""``seawall publish STREAM JSON``: put messages on a stream from the shell."""

from __future__ import annotations

import json

import click

from queues import producer
from queues.envelope import encode
from workers.cli.common import redis_url_option, sync_client


@click.command()
@click.argument("stream")
@click.argument("payload", metavar="JSON")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Publish this many copies (each with its own message id).")
@click.option("--type", "type_", default=None, help="The envelope's `type` field.")
@redis_url_option
def publish(stream: str, payload: str, count: int, type_: str | None,
            redis_url: str | None) -> None:
    """Publish JSON to STREAM, e.g. `seawall publish orders '{"order_id": "o-1"}'`."""
    try:
        json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="JSON") from None
    client = sync_client(redis_url)
    ids: list[str] = []
    for start in range(0, count, 1000):
        batch = [encode(payload, type=type_) for _ in range(min(1000, count - start))]
        producer.publish_many(client, stream, batch)
        ids.extend(str(f["id"]) for f in batch)
    if count == 1:
        click.echo(ids[0])
    else:
        click.echo(f"published {count} messages to {stream}")
