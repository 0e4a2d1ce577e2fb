"""The yardstick: the fastest plain redis-py consumer loop a team would write by hand.

XREADGROUP COUNT 100, ``model_validate_json`` per message, one pipelined XACK per batch."""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis
from pydantic import BaseModel


class Order(BaseModel):
    n: int
    order_id: str
    amount_cents: int


async def drain(url: str, stream: str, group: str, total: int) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except Exception:
        pass
    done = 0
    while done < total:
        reply = await client.xreadgroup(group, "raw-1", {stream: ">"}, count=100, block=1000)
        for _stream, entries in reply or []:
            ids = []
            for entry_id, fields in entries:
                Order.model_validate_json(fields[b"payload"])
                ids.append(entry_id)
            async with client.pipeline(transaction=False) as pipe:
                pipe.xack(stream, group, *ids)
                await pipe.execute()
            done += len(ids)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(drain(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
