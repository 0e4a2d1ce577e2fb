"""Every key a saga script may touch is in its saga type's one hash slot, so the scripts run
on a Redis Cluster as they are: the header's keys, each instance's keys, the step and
compensation streams and everything derived from them (retry, delayed, dead letters,
completion markers, outbox)."""

from __future__ import annotations

from queues.commit import slot_of
from queues.keys import HandlerKeys, SagaKeys
from queues.saga_store import SagaLayout


def test_every_key_of_a_saga_type_shares_one_slot() -> None:
    keys = SagaKeys("checkout")
    layout = SagaLayout(keys, ("charge", "reserve"))
    header, _ = layout.header(now_ms=1)
    step = HandlerKeys(keys.on("orders"), "checkout.charge")
    undo = HandlerKeys(keys.undo("charge"), "checkout.charge.undo")
    derived = [k for h in (step, undo) for k in (
        h.stream, h.retry, h.delayed, h.dlq, h.breaker, h.outbox, h.done("m-1"))]
    every = [*header, *layout.instance("order-17"), *layout.instance("other"), *derived,
             keys.outcome, keys.deadlines]

    assert {slot_of(k) for k in every} == {slot_of(keys.ledger("x"))}
    # and another saga type has a slot of its own (usually another one)
    assert keys.tag != SagaKeys("returns").tag
