"""The envelope: what seawall's producer writes, and how any entry (including one from a
foreign producer, or one with broken bytes) is read back."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from queues.envelope import Envelope, EnvelopeError, dump_payload, encode, follow_up_id


class OrderPlaced(BaseModel):
    order_id: str
    amount_cents: int


def _as_entry(fields: dict[str, str | bytes]) -> dict[bytes, bytes]:
    """The fields as Redis hands them back (bytes both sides)."""
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


def test_encode_writes_the_documented_fields() -> None:
    fields = encode(OrderPlaced(order_id="o1", amount_cents=250), message_id="m1",
                    correlation_id="c1", causation_id="cause1")

    assert json.loads(fields["payload"]) == {"order_id": "o1", "amount_cents": 250}
    assert fields["id"] == "m1"
    assert fields["type"] == "OrderPlaced"
    assert fields["attempt"] == "1"
    assert fields["correlation_id"] == "c1"
    assert fields["causation_id"] == "cause1"
    assert str(fields["published_at"]).isdigit()


def test_encode_defaults_id_and_correlation_id() -> None:
    a = encode({"n": 1})
    b = encode({"n": 1})

    assert a["id"] != b["id"]
    assert a["correlation_id"] == a["id"]
    assert "causation_id" not in a
    assert "type" not in a  # a dict has no model name to record


def test_headers_are_kept_but_cannot_overwrite_the_payload() -> None:
    fields = encode({"n": 1}, headers={"x-tenant": "acme", "payload": "evil"})

    assert fields["x-tenant"] == "acme"
    assert json.loads(fields["payload"]) == {"n": 1}


def test_encode_then_decode_round_trips() -> None:
    fields = encode(OrderPlaced(order_id="o1", amount_cents=250), message_id="m1",
                    headers={"x-tenant": "acme"})
    env = Envelope("orders", "1-0", _as_entry(fields))

    assert OrderPlaced.model_validate_json(env.payload) == OrderPlaced(order_id="o1",
                                                                       amount_cents=250)
    assert env.message_id == "m1"
    assert env.type == "OrderPlaced"
    assert env.attempt == 1
    assert env.correlation_id == "m1"
    assert env.origin_entry_id == "1-0"
    assert env.headers["x-tenant"] == "acme"
    assert "payload" not in env.headers


def test_dump_payload_accepts_json_text_and_rejects_other_objects() -> None:
    assert dump_payload('{"a":1}') == '{"a":1}'
    assert dump_payload(b'{"a":1}') == b'{"a":1}'
    with pytest.raises(TypeError, match="pydantic model, a dict, or JSON text"):
        dump_payload(42)  # type: ignore[arg-type]


def test_missing_payload_raises_envelope_error() -> None:
    env = Envelope("orders", "1-0", {b"id": b"m1"})

    with pytest.raises(EnvelopeError, match="payload"):
        _ = env.payload
    # Everything else about the entry is still readable, for the dead letter it becomes.
    assert env.message_id == "m1"
    assert isinstance(EnvelopeError("x"), ValueError)


def test_invalid_utf8_in_headers_is_tolerated() -> None:
    env = Envelope("orders", "1-0", {
        b"payload": b"{}", b"id": b"m\xff1", b"x-bad": b"\xfe\xff", b"correlation_id": b"\xc3",
        b"type": b"Or\xffder",
    })

    assert env.message_id == "m\ufffd1"
    assert env.headers["x-bad"] == "\ufffd\ufffd"
    assert env.correlation_id == "\ufffd"
    assert env.type == "Or\ufffdder"
    assert env.payload == b"{}"


def test_foreign_producer_message_id_falls_back_to_the_entry_id() -> None:
    """A producer in another language XADDs only ``payload``."""
    env = Envelope("orders", "1700000000000-3", {b"payload": b'{"n": 1}'})

    assert env.message_id == "1700000000000-3"
    assert env.correlation_id == "1700000000000-3"
    assert env.attempt == 1
    assert env.type is None
    assert env.first_failed_at_ms is None
    assert env.headers == {}


def test_a_retried_message_keeps_its_origin_entry_id() -> None:
    env = Envelope("seawall:{orders}:retry:h", "9-0",
                   {b"payload": b"{}", b"origin_entry_id": b"5-0", b"attempt": b"3",
                    b"first_failed_at": b"1700000000000"})

    assert env.message_id == "5-0"
    assert env.origin_entry_id == "5-0"
    assert env.attempt == 3
    assert env.first_failed_at_ms == 1_700_000_000_000


@pytest.mark.parametrize(("raw", "expected"), [(b"", 1), (b"x", 1), (b"0", 1), (b"-4", 1),
                                               (b"7", 7)])
def test_a_garbled_attempt_counts_as_at_least_one(raw: bytes, expected: int) -> None:
    env = Envelope("orders", "1-0", {b"payload": b"{}", b"attempt": raw})

    assert env.attempt == expected


def test_a_garbled_first_failed_at_is_ignored() -> None:
    env = Envelope("orders", "1-0", {b"payload": b"{}", b"first_failed_at": b"soon"})

    assert env.first_failed_at_ms is None


def test_follow_up_ids_are_stable_and_differ_by_every_part() -> None:
    base = follow_up_id("m1", "billing.charge", "payments", 0)
    assert base == follow_up_id("m1", "billing.charge", "payments", 0)
    assert len(base) == 32 and int(base, 16) >= 0
    others = {follow_up_id("m2", "billing.charge", "payments", 0),
              follow_up_id("m1", "billing.refund", "payments", 0),
              follow_up_id("m1", "billing.charge", "refunds", 0),
              follow_up_id("m1", "billing.charge", "payments", 1),
              follow_up_id("m1", "billing.charge:fallback", "payments", 0)}
    assert len(others) == 5 and base not in others
    # The parts cannot run into each other: a separator no name contains splits them.
    assert follow_up_id("m1", "a", "bc", 0) != follow_up_id("m1", "ab", "c", 0)
