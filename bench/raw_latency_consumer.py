"""The latency yardstick: a plain redis.asyncio consumer loop a team would write by hand.

XREADGROUP COUNT 100 BLOCK 1000, ``model_validate_json`` per message, then the same
measurement as bench/latency_app.py (``time.time_ns()`` minus the entry's ``sent_ns``), one
pipelined XACK per batch. Writes the (sent_ns, latency_ns) pairs to OUT when the entry with
``bench_end`` arrives, and exits.

    python bench/raw_latency_consumer.py URL STREAM GROUP OUT
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from array import array

import redis.asyncio as aioredis
from pydantic import BaseModel


class Order(BaseModel):
    n: int
    order_id: str
    amount_cents: int


def write_samples(path: str, samples: array[int]) -> None:
    with open(f"{path}.tmp", "wb") as f:
        samples.tofile(f)
    os.replace(f"{path}.tmp", path)


async def consume(url: str, stream: str, group: str) -> array[int]:
    client = aioredis.Redis.from_url(url)
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except Exception:
        pass
    recorded = array("q")
    ended = False
    while not ended:
        reply = await client.xreadgroup(group, "raw-1", {stream: ">"}, count=100, block=1000)
        for _stream, entries in reply or []:
            ids = []
            for entry_id, fields in entries:
                Order.model_validate_json(fields[b"payload"])
                now = time.time_ns()
                ids.append(entry_id)
                if b"bench_end" in fields:
                    ended = True
                    continue
                sent = int(fields[b"sent_ns"])
                recorded.append(sent)
                recorded.append(now - sent)
            async with client.pipeline(transaction=False) as pipe:
                pipe.xack(stream, group, *ids)
                await pipe.execute()
    await client.aclose()
    return recorded


if __name__ == "__main__":
    write_samples(sys.argv[4], asyncio.run(consume(*sys.argv[1:4])))
