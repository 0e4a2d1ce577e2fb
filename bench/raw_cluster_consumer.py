"""The yardstick on a Redis Cluster: bench/raw_consumer.py's loop (XREADGROUP COUNT 100,
``model_validate_json`` per message, one pipelined XACK per batch) with redis-py's asyncio
``RedisCluster``, on one stream."""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.asyncio.cluster import ClusterNode


class Order(BaseModel):
    n: int
    order_id: str
    amount_cents: int


async def drain(seeds: str, stream: str, group: str, total: int) -> None:
    nodes = [ClusterNode(h, int(p)) for h, _, p in (s.rpartition(":") for s in seeds.split(","))]
    client = aioredis.RedisCluster(startup_nodes=nodes)
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except Exception:
        pass
    done = 0
    while done < total:
        reply = await client.xreadgroup(group, "raw-1", {stream: ">"}, count=100, block=1000)
        items = reply.items() if isinstance(reply, dict) else (reply or [])
        for _stream, entries in items:
            if entries and isinstance(entries[0], list) and entries[0] and \
                    isinstance(entries[0][0], list | tuple):
                entries = entries[0]
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
