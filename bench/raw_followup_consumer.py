"""The yardstick for consume-transform-produce: the fastest plain redis-py loop a team would
write by hand for a handler that publishes one event per message.

XREADGROUP COUNT 100, ``model_validate_json`` per message, then one pipeline per batch with
one XADD per message to the target stream and the batch's XACK."""

from __future__ import annotations

import asyncio
import json
import sys

import redis.asyncio as aioredis
from pydantic import BaseModel


class Order(BaseModel):
    n: int
    order_id: str
    amount_cents: int


async def drain(url: str, stream: str, group: str, target: str, total: int) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except Exception:
        pass
    done = 0
    while done < total:
        reply = await client.xreadgroup(group, "raw-1", {stream: ">"}, count=100, block=1000)
        for _stream, entries in reply or []:
            async with client.pipeline(transaction=False) as pipe:
                ids = []
                for entry_id, fields in entries:
                    order = Order.model_validate_json(fields[b"payload"])
                    pipe.xadd(target, {"payload": json.dumps({"n": order.n})})
                    ids.append(entry_id)
                pipe.xack(stream, group, *ids)
                await pipe.execute()
            done += len(ids)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(drain(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
