"""Saga types read off the handler registry's (handler, stream) pairs: names, steps, the
steps that have a compensation, and the layout the saga scripts get. Pure."""

from __future__ import annotations

from queues.keys import HandlerKeys, SagaKeys
from queues.saga_registry import DEFAULT_RETENTION_S, saga_of, saga_types


def test_a_saga_type_its_steps_and_its_compensations_come_from_the_streams() -> None:
    checkout = SagaKeys("checkout")
    handlers = [
        ("checkout.charge", checkout.on("orders")),
        ("checkout.reserve", checkout.on("payments")),
        ("checkout.ship", checkout.on("stock")),
        ("checkout.charge.undo", checkout.undo("charge")),
        ("checkout.reserve.undo", checkout.undo("reserve")),
        ("checkout.on_outcome", checkout.outcome),
        ("billing.charge", "orders"),
        ("billing.retry", HandlerKeys("orders", "billing.charge").retry),
    ]

    types = saga_types(handlers)

    assert list(types) == ["checkout"]
    found = types["checkout"]
    assert found.steps == ("charge", "reserve", "ship")
    assert found.undoable == ("charge", "reserve")
    layout = found.layout()
    assert (layout.keys, layout.undoable, layout.retention_s, layout.outcomes) == (
        checkout, ("charge", "reserve"), DEFAULT_RETENTION_S, True)
    assert found.layout(60).retention_s == 60


def test_a_stream_that_looks_like_a_saga_but_is_not_one_is_passed_over() -> None:
    assert saga_of("orders") is None
    assert saga_of("saga:checkout") is None
    assert saga_of("seawall:{orders}:retry:x") is None
    assert saga_of("seawall:{saga:a:b}:on:orders") is None  # not a saga name (':')
    assert saga_of(SagaKeys("checkout").on("orders")) == SagaKeys("checkout")
    # a stream whose name contains ":undo:" is a step's, not a compensation's
    tricky = SagaKeys("s").on("a:undo:b")
    odd = saga_types([("s.odd", tricky)])["s"]
    assert (odd.steps, odd.undoable, odd.outcomes) == (("odd",), (), False)
    assert not odd.layout().outcomes


def test_saga_types_of_an_outcome_handler_alone_have_no_steps() -> None:
    only = saga_types([("x.on_outcome", SagaKeys("x").outcome)])
    assert (only["x"].steps, only["x"].undoable, only["x"].outcomes) == ((), (), True)
