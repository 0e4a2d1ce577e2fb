"""The key layout is a contract (DESIGN.md's table): other languages and operators' tools
find seawall's keys by these exact names, and every derived key carries the stream as a
Redis Cluster hash tag."""

from __future__ import annotations

import dataclasses

import pytest

from queues import keys
from queues.keys import OUTCOMES, PROCESSES, REGISTRY, RESTARTS, HandlerKeys


def _hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the text between the first '{' and the
    next '}' (the whole key when there is none)."""
    start = key.find("{")
    if start == -1:
        return key
    end = key.find("}", start + 1)
    if end in (-1, start + 1):
        return key
    return key[start + 1:end]


def test_derived_keys_match_the_design_table() -> None:
    k = HandlerKeys("orders", "billing.charge")

    assert k.stream == "orders"
    assert k.group == "billing.charge"
    assert k.retry == "seawall:{orders}:retry:billing.charge"
    assert k.delayed == "seawall:{orders}:delayed:billing.charge"
    assert k.dlq == "seawall:{orders}:dlq:billing.charge"
    assert k.breaker == "seawall:{orders}:breaker:billing.charge"
    assert k.breaker_log == "seawall:{orders}:breaker-log:billing.charge"
    assert k.done("m-1") == "seawall:{orders}:done:billing.charge:m-1"
    assert k.read_streams == ("orders", "seawall:{orders}:retry:billing.charge")


def test_global_keys() -> None:
    assert REGISTRY == "seawall:registry"
    assert PROCESSES == "seawall:processes"
    assert OUTCOMES == "seawall:outcomes"
    assert RESTARTS == "seawall:restarts"


def test_every_derived_key_hashes_to_the_streams_slot() -> None:
    k = HandlerKeys("shop:orders", "billing.charge")

    derived = [k.retry, k.delayed, k.dlq, k.breaker, k.breaker_log, k.done("abc")]

    # The user's stream has no braces, so its whole name is hashed: the tag must equal it.
    assert _hash_tag(k.stream) == "shop:orders"
    assert {_hash_tag(key) for key in derived} == {"shop:orders"}


def test_two_handlers_on_one_stream_own_distinct_keys() -> None:
    a = HandlerKeys("orders", "billing.charge")
    b = HandlerKeys("orders", "email.receipt")

    assert a.group != b.group
    assert {a.retry, a.delayed, a.dlq, a.breaker}.isdisjoint(
        {b.retry, b.delayed, b.dlq, b.breaker})


@pytest.mark.parametrize("stream", ["ord{ers", "ord}ers", "{orders}"])
def test_braces_in_the_stream_name_are_rejected(stream: str) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        HandlerKeys(stream, "billing.charge")


@pytest.mark.parametrize("handler", ["bill{ing", "bill}ing"])
def test_braces_in_the_handler_name_are_rejected(handler: str) -> None:
    with pytest.raises(ValueError, match="hash tag"):
        HandlerKeys("orders", handler)


@pytest.mark.parametrize(("stream", "handler"), [("", "h"), ("s", "")])
def test_empty_names_are_rejected(stream: str, handler: str) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        HandlerKeys(stream, handler)


def test_handler_keys_is_frozen_and_built_by_the_helper() -> None:
    k = HandlerKeys("orders", "billing.charge")

    assert k == HandlerKeys("orders", "billing.charge")
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.stream = "other"  # type: ignore[misc]


def test_the_module_docstring_is_the_key_table() -> None:
    doc = keys.__doc__ or ""

    for name in ("``orders``", "seawall:{orders}:retry:<handler>",
                 "seawall:{orders}:delayed:<handler>", "seawall:{orders}:dlq:<handler>",
                 "seawall:{orders}:breaker:<handler>", "seawall:registry"):
        assert name in doc
