"""The checks `seawall run` makes on a Redis Cluster, as pure functions: a handler whose keys
would span slots fails naming the fix; streams sharing a slot, saga types (one slot each)
and a layout where one master serves every stream are warned about."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import count

import pytest

from queues.commit import slot_of
from queues.keys import HandlerKeys, SagaKeys
from workers.cluster_checks import check, hot_slot_warnings, node_warnings, slot_errors
from workers.errors import ConfigError


def test_every_handler_key_layout_keys_py_builds_is_in_one_slot() -> None:
    saga = SagaKeys("checkout")
    handlers = [("billing.charge", HandlerKeys("orders", "billing.charge")),
                ("checkout.pay", HandlerKeys(saga.on("orders"), "checkout.pay")),
                ("checkout.pay.undo", HandlerKeys(saga.undo("pay"), "checkout.pay.undo"))]
    assert slot_errors(handlers) == []


@dataclass(frozen=True, slots=True)
class _Misplaced(HandlerKeys):
    """A layout that puts the retry stream in another slot than the stream."""

    @property
    def retry(self) -> str:
        return f"seawall:{{elsewhere}}:retry:{self.handler}"


def test_a_handler_whose_keys_span_slots_fails_naming_the_fix() -> None:
    [error] = slot_errors([("h", _Misplaced("orders", "h"))])
    assert "'h'" in error and "'orders'" in error and "hash tag" in error
    with pytest.raises(ConfigError, match="hash slots"):
        check("redis+cluster://127.0.0.1:1/", [("h", _Misplaced("orders", "h"))])


def test_nothing_is_checked_on_one_redis() -> None:
    assert check("redis://127.0.0.1:1/0", [("h", _Misplaced("orders", "h"))]) == []


def _same_slot_as(stream: str) -> str:
    return next(f"{stream}-{i}" for i in count() if slot_of(f"{stream}-{i}") == slot_of(stream))


def test_streams_sharing_a_slot_are_named() -> None:
    twin = _same_slot_as("orders")
    [warning] = hot_slot_warnings(["orders", twin, "payments"])
    assert f"orders, {twin}" in warning or f"{twin}, orders" in warning
    assert "payments" not in warning


def test_a_saga_type_is_one_slot_by_design_and_says_how_to_split_it() -> None:
    saga = SagaKeys("checkout")
    [warning] = hot_slot_warnings([saga.on("orders"), saga.on("payments"), saga.undo("pay")])
    assert "saga 'checkout'" in warning and "3 step" in warning and "checkout-eu" in warning


def test_one_master_serving_every_stream_is_warned_about_only_with_several_masters() -> None:
    streams = ["a", "b", "c"]
    [warning] = node_warnings(streams, lambda s: "10.0.0.1:7000", masters=3)
    assert "all 3 streams" in warning and "10.0.0.1:7000" in warning
    assert node_warnings(streams, lambda s: "10.0.0.1:7000", masters=1) == []
    assert node_warnings(streams, lambda s: f"node-{s}", masters=3) == []
