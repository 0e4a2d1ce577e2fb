"""A saga test's world: a three-step checkout saga on a lab app, an "external service" (a
Redis hash: applied/undone counts per idempotency key, and the order things happened in),
and where every saga ended up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from e2e.failure_helpers import Lab
from pydantic import BaseModel
from tenacity import stop_after_attempt, wait_none

from queues import saga_store
from sagas import Saga
from workers.context import Context

STEPS = ("charge", "reserve", "ship")


class Order(BaseModel):
    n: int


class Memo(BaseModel):
    n: int
    key: str


@dataclass
class Service:
    """The external service the steps call: per idempotency key, how often it was applied
    and undone; and a journal of (what, key) in the order it happened."""

    client: aioredis.Redis
    prefix: str

    async def apply(self, step: str, key: str) -> None:
        await self.client.hincrby(self.prefix + "applied", f"{step}|{key}", 1)
        await self.client.rpush(self.prefix + "journal", f"do {step} {key}")

    async def undo(self, step: str, key: str) -> None:
        await self.client.hincrby(self.prefix + "undone", f"{step}|{key}", 1)
        await self.client.rpush(self.prefix + "journal", f"undo {step} {key}")

    async def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        applied = await self.client.hgetall(self.prefix + "applied")
        undone = await self.client.hgetall(self.prefix + "undone")
        return ({k.decode(): int(v) for k, v in applied.items()},
                {k.decode(): int(v) for k, v in undone.items()})

    async def journal(self) -> list[str]:
        return [j.decode() for j in await self.client.lrange(self.prefix + "journal", 0, -1)]


@dataclass
class Checkout:
    saga: Saga
    service: Service
    streams: dict[str, str]
    fail: dict[str, Callable[[Order, Context], Any]] = field(default_factory=dict)
    """step -> called before the step applies: raise to fail it."""

    async def states(self, ids: list[str]) -> dict[str, str]:
        out = {}
        for saga_id in ids:
            ledger = await saga_store.ledger(self.saga.app.async_client, self.saga.keys,
                                             saga_id)
            out[saga_id] = ledger.get("state", "unknown")
        return out


def checkout_saga(lab: Lab, aredis: aioredis.Redis, *, attempts: int = 2,
                  **saga_options: Any) -> Checkout:
    streams = {s: lab.stream(s) for s in ("orders", "payments", "stock")}
    saga = Saga(lab.app, f"checkout{lab.uid}", **saga_options)
    service = Service(aredis, f"fail:{lab.uid}:svc:")
    world = Checkout(saga, service, streams)
    policy: dict[str, Any] = {"stop": stop_after_attempt(attempts), "wait": wait_none(),
                              "breaker": None}

    async def run(step: str, order: Order, ctx: Context, publish_to: str | None) -> None:
        hook = world.fail.get(step)
        if hook is not None:
            result = hook(order, ctx)
            if hasattr(result, "__await__"):
                await result
        await service.apply(step, ctx.saga.key)
        ctx.saga.remember({"n": order.n, "key": ctx.saga.key})
        if publish_to is not None:
            await ctx.publish(publish_to, order)

    @saga.step(streams["orders"], **policy)
    async def charge(order: Order, ctx: Context) -> None:
        await run("charge", order, ctx, streams["payments"])

    @saga.step(streams["payments"], **policy)
    async def reserve(order: Order, ctx: Context) -> None:
        await run("reserve", order, ctx, streams["stock"])

    @saga.step(streams["stock"], **policy)
    async def ship(order: Order, ctx: Context) -> None:
        await run("ship", order, ctx, None)

    for step in (charge, reserve, ship):
        def undo_of(name: str):  # type: ignore[no-untyped-def]
            async def undo(memo: Memo, ctx: Context) -> None:
                hook = world.fail.get(f"undo {name}")
                if hook is not None:
                    result = hook(Order(n=memo.n), ctx)
                    if hasattr(result, "__await__"):
                        await result
                await service.undo(name, memo.key)
            undo.__name__ = f"undo_{name}"
            return undo
        step.compensate(undo_of(step.name), **policy)
    return world


async def cleanup_saga(aredis: aioredis.Redis, saga: Saga) -> None:
    keys = [k async for k in aredis.scan_iter(match=f"seawall:{{{saga.keys.tag}}}:*",
                                              count=1000)]
    if keys:
        await aredis.delete(*keys)
