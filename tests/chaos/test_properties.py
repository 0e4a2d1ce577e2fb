"""Properties under hostile input (hypothesis):

* the envelope decoder answers for any field map of any bytes, or says the entry has no
  payload (``EnvelopeError``), and nothing else;
* entries XADDed by a raw client, with arbitrary field maps and bytes, never crash a pool:
  each one ends handled, or dead-lettered with an error type and a reason;
* retry decisions are monotone in the attempt number: a later attempt never waits less,
  and once the policy gives up it never retries a later attempt.

(The breaker model against its Lua twin is ``tests/workers/test_breaker_transitions.py``.)
"""

from __future__ import annotations

import asyncio
import json
import uuid

import redis.asyncio as aioredis
from e2e.failure_helpers import NO_CLAIM, Lab, PoolRun
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from tenacity import (
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
    wait_incrementing,
)

from queues import dead_letters
from queues.envelope import Envelope, EnvelopeError
from tests.conftest import REDIS_URL
from workers.context import Context
from workers.retry import GiveUp, RetryIn, decide, make_policy

KNOWN = [b"payload", b"id", b"type", b"published_at", b"attempt", b"correlation_id",
         b"causation_id", b"traceparent", b"saga", b"saga_id", b"step", b"first_failed_at",
         b"origin_entry_id", b"replayed_from", b"sig", b"payload_size",
         b"dlq_error", b"dlq_entry_id"]
NASTY = [b"", b"0", b"-1", b"1e309", b"99999999999999999999999", b"\xff\xfe\x00",
         b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", b"null", b"{}",
         b"1700000000000-0", b"\x1f"]

field_names = st.one_of(st.sampled_from(KNOWN), st.binary(min_size=1, max_size=12))
field_values = st.one_of(st.sampled_from(NASTY), st.binary(max_size=40))
payloads = st.one_of(
    st.builds(lambda n: json.dumps({"n": n}).encode(), st.integers(-2**40, 2**40)),
    st.binary(max_size=60),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=8).map(lambda v: json.dumps(v).encode()),
)
entries = st.builds(
    lambda fields, payload: {**fields, **({b"payload": payload} if payload is not None
                                          else {})},
    st.dictionaries(field_names, field_values, max_size=8),
    st.none() | payloads,
)


@given(st.dictionaries(field_names, field_values, max_size=10))
def test_the_envelope_decoder_answers_for_any_fields(fields: dict[bytes, bytes]) -> None:
    envelope = Envelope("s", "1-0", fields)
    assert isinstance(envelope.message_id, str)
    assert isinstance(envelope.origin_entry_id, str)
    assert envelope.attempt >= 1
    assert isinstance(envelope.correlation_id, str)
    assert envelope.type is None or isinstance(envelope.type, str)
    assert envelope.first_failed_at_ms is None or isinstance(envelope.first_failed_at_ms, int)
    assert b"payload" not in {k.encode() for k in envelope.headers}
    try:
        assert envelope.payload == fields[b"payload"]
    except EnvelopeError:
        assert b"payload" not in fields


class Item(BaseModel):
    n: int


PROBE = b"chaos-probe"
"""A field each generated entry carries, unique to it, to find it again wherever it ends."""


async def _fuzz_pool(batch: list[dict[bytes, bytes]]) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    lab = Lab(uuid.uuid4().hex[:10], REDIS_URL)
    lab.app.pool("default", claim_after=NO_CLAIM, concurrency=8)
    stream, handled = lab.stream("fuzz"), lab.key("handled")

    @lab.app.handler(stream, name=lab.name("fuzz"), breaker=None,
                     stop=stop_after_attempt(2), wait=wait_fixed(0.05))
    async def fuzz(item: Item, ctx: Context) -> None:
        await client.sadd(handled, ctx.headers[PROBE.decode()])

    keys = lab.keys(lab.name("fuzz"))
    try:
        async with PoolRun(lab.app) as run:
            probes = []
            for i, fields in enumerate(batch):
                probe = f"p{i}"
                probes.append(probe)
                await client.xadd(stream, {**fields, PROBE: probe.encode()})

            async def accounted() -> bool:
                return int(await client.scard(handled)) + int(await client.xlen(keys.dlq)) \
                    >= len(batch)

            await run.until(accounted, within=30, what="every entry handled or dead")
            run.check()
            done = {p.decode() for p in await client.smembers(handled)}
            dead = {}
            for _, f in await client.xrange(keys.dlq):
                dead[f[PROBE].decode()] = f
            assert done | set(dead) == set(probes)
            assert not done & set(dead)
            for letter in dead.values():
                assert letter[dead_letters.ERROR_TYPE.encode()]
                assert letter[dead_letters.REASON.encode()]
            pending = await client.xpending(stream, keys.group)
            assert pending["pending"] == 0
    finally:
        await lab.cleanup(client)
        await client.aclose()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries, min_size=1, max_size=25))
def test_raw_entries_of_any_shape_end_handled_or_dead_lettered(
        batch: list[dict[bytes, bytes]]) -> None:
    asyncio.run(_fuzz_pool(batch))


policies = st.builds(
    lambda stop, wait: make_policy(stop=stop, wait=wait),
    st.one_of(st.integers(1, 30).map(stop_after_attempt),
              st.floats(0.1, 3600).map(stop_after_delay),
              st.tuples(st.integers(1, 30), st.floats(0.1, 3600)).map(
                  lambda t: stop_after_attempt(t[0]) | stop_after_delay(t[1]))),
    st.one_of(st.floats(0, 60).map(wait_fixed),
              st.tuples(st.floats(0.01, 5), st.floats(0, 10), st.floats(10, 600)).map(
                  lambda t: wait_exponential(multiplier=t[0], min=t[1], max=t[2])),
              st.tuples(st.floats(0, 5), st.floats(0, 5), st.floats(5, 600)).map(
                  lambda t: wait_incrementing(start=t[0], increment=t[1], max=t[2]))),
)


@given(policies, st.integers(1, 40), st.integers(1, 40), st.floats(0, 120))
def test_retry_decisions_are_monotone_in_the_attempt(policy: object, a: int, b: int,
                                                     spacing: float) -> None:
    first, later = min(a, b), max(a, b)
    error = RuntimeError("boom")

    def at(attempt: int) -> RetryIn | GiveUp:
        # Each attempt fails ``spacing`` seconds after the one before it.
        return decide(policy, attempt=attempt, first_failed_at=0.0,  # type: ignore[arg-type]
                      now=spacing * (attempt - 1), error=error)

    early, late = at(first), at(later)
    if isinstance(late, RetryIn):
        assert isinstance(early, RetryIn), (early, late)
        assert early.delay <= late.delay + 1e-9, (early, late)
    if isinstance(early, GiveUp):
        assert isinstance(late, GiveUp), (early, late)
