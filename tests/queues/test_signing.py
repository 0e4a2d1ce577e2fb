"""Signing (pure): HMAC-SHA256 over the canonical form of an entry, checked the way a
consumer reads entries (bytes), with key rotation, and each way an entry can be refused
named in the reason; every test runs with the C verifier and with the Python one."""

from __future__ import annotations

import hmac

import pytest

from queues import signing
from queues.delayed import retry_fields
from queues.envelope import encode
from queues.signing import MIN_KEY_BYTES, UNSIGNED, Keyring, canonical, canonical_raw

K1 = "k1-" + "a" * 40
K2 = b"k2-" + b"\x00\xffb" * 20
STREAM = "payments"


@pytest.fixture(autouse=True, params=["C", "Python"])
def verifier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which verifier the keyrings of a test use."""
    if request.param == "C":
        if signing.NATIVE is None:
            pytest.skip("queues._sigcheck was not built (no C compiler or OpenSSL headers "
                        "when seawall was installed)")
    else:
        monkeypatch.setattr(signing, "NATIVE", None)
    return str(request.param)


def read_back(fields: dict[str, str | bytes]) -> dict[bytes, bytes]:
    """The fields as a consumer reads them from Redis."""
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


def signed(ring: Keyring, stream: str = STREAM, **headers: str) -> dict[bytes, bytes]:
    fields = encode({"order_id": "o-1", "cents": 500}, type="Charge", headers=headers or None)
    ring.sign(fields, stream)
    return read_back(fields)


def test_the_mac_is_hmac_sha256_of_the_canonical_form() -> None:
    ring = Keyring({"k1": K1}, "k1")
    fields = signed(ring)

    expected = hmac.new(K1.encode(), canonical_raw(fields, STREAM.encode()), "sha256")
    assert fields[b"sig"] == b"k1:" + expected.hexdigest().encode()


@pytest.mark.parametrize("length", [32, 64, 65, 200])
def test_keys_of_any_length_match_the_standard_library_hmac(length: int) -> None:
    key = bytes(range(256))[:length] if length <= 256 else b"x" * length
    ring = Keyring({"k": key}, "k")
    fields = signed(ring)

    expected = hmac.digest(key, canonical_raw(fields, STREAM.encode()), "sha256")
    assert fields[b"sig"] == b"k:" + expected.hex().encode()


def test_a_signed_entry_passes_and_text_or_bytes_fields_sign_the_same() -> None:
    ring = Keyring({"k1": K1}, "k1")
    fields = signed(ring)

    assert ring.check(fields, STREAM.encode()) is None
    as_text = {k.decode(): v.decode() for k, v in fields.items()}
    assert canonical(as_text, STREAM) == canonical_raw(fields, STREAM.encode())


def test_the_canonical_form_is_independent_of_field_order_and_unambiguous() -> None:
    a = {b"payload": b"{}", b"id": b"m1", b"type": b"T"}
    b = dict(reversed(list(a.items())))
    assert canonical_raw(a, b"s") == canonical_raw(b, b"s")
    # a value cannot bleed into the next name
    assert (canonical_raw({b"a": b"b\n1:1:cd"}, b"s")
            != canonical_raw({b"a": b"b", b"c": b"d"}, b"s"))
    # nor the stream into the fields
    assert canonical_raw({b"a": b"b"}, b"s1") != canonical_raw({b"a": b"b"}, b"s")


def test_unsigned_entries_are_refused() -> None:
    ring = Keyring({"k1": K1}, "k1")
    fields = read_back(encode({"order_id": "o-1"}))

    reason = ring.check(fields, STREAM.encode())
    assert reason is not None and "not signed" in reason


@pytest.mark.parametrize("field,value", [
    (b"payload", b'{"order_id":"o-1","cents":50000}'),
    (b"id", b"another-id"),
    (b"type", b"Refund"),
    (b"correlation_id", b"someone-else"),
    (b"published_at", b"1"),
    (b"saga_id", b"another-saga"),
    (b"x-tenant", b"evil"),
])
def test_any_signed_field_changed_or_added_is_refused(field: bytes, value: bytes) -> None:
    ring = Keyring({"k1": K1}, "k1")
    fields = signed(ring, **{"x-tenant": "acme"})
    fields[field] = value

    reason = ring.check(fields, STREAM.encode())
    assert reason is not None and "does not match" in reason


def test_a_removed_field_or_another_stream_is_refused() -> None:
    ring = Keyring({"k1": K1}, "k1")
    fields = signed(ring)
    assert ring.check(fields, b"refunds") is not None
    del fields[b"type"]
    assert ring.check(fields, STREAM.encode()) is not None


def test_a_forged_or_malformed_signature_is_refused() -> None:
    ring = Keyring({"k1": K1}, "k1")
    fields = signed(ring)
    for sig in (b"0" * 64, b"", b"zz", fields[b"sig"][:-1]):
        assert ring.check({**fields, b"sig": sig}, STREAM.encode()) is not None
    other = Keyring({"k1": "another key of the same id, long enough"}, "k1")
    assert other.check(fields, STREAM.encode()) is not None


def test_an_unknown_key_id_is_named_with_the_keys_the_app_has() -> None:
    fields = signed(Keyring({"k9": K1}, "k9"))
    ring = Keyring({"k1": K1, "k2": K2}, "k2")

    reason = ring.check(fields, STREAM.encode())
    assert reason is not None
    assert "'k9'" in reason and "k1, k2" in reason
    no_key = {**fields, b"sig": fields[b"sig"].partition(b":")[2]}
    assert "not '<key id>:<signature>'" in (ring.check(no_key, STREAM.encode()) or "")


def test_what_retries_and_replays_rewrite_is_not_signed() -> None:
    ring = Keyring({"k1": K1}, "k1")
    fields = signed(ring)
    retried = retry_fields(fields, attempt=3, first_failed_at_ms=1700000000000,
                           origin_entry_id="1700000000000-0")
    retried[b"replayed_from"] = b"1700000000001-0"
    retried[b"traceparent"] = b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"

    assert ring.check(retried, STREAM.encode()) is None
    assert {b"attempt", b"first_failed_at", b"origin_entry_id", b"replayed_from",
            b"traceparent", b"tracestate"} <= UNSIGNED


def test_rotation_consumers_accept_every_key_producers_sign_with_one() -> None:
    old = Keyring({"k1": K1}, "k1")
    both = Keyring({"k1": K1, "k2": K2}, "k1")
    new = Keyring({"k2": K2, "k1": K1}, "k2")
    only_new = Keyring({"k2": K2}, "k2")

    by_old, by_new = signed(old), signed(new)
    assert by_new[b"sig"].startswith(b"k2:")
    for consumer in (both, new):
        assert consumer.check(by_old, STREAM.encode()) is None
        assert consumer.check(by_new, STREAM.encode()) is None
    assert old.check(by_new, STREAM.encode()) is not None
    assert only_new.check(by_old, STREAM.encode()) is not None
    assert only_new.check(by_new, STREAM.encode()) is None


def test_signing_again_replaces_the_signature() -> None:
    ring = Keyring({"k1": K1}, "k1")
    fields = encode({"order_id": "o-1"})
    ring.sign(fields, "a")
    fields["saga_id"] = "s-1"
    ring.sign(fields, "b")

    assert ring.check(read_back(fields), b"b") is None


@pytest.mark.parametrize("keys,sign_with,message", [
    ({}, None, "empty"),
    ({"k1": "short"}, "k1", f"at least {MIN_KEY_BYTES}"),
    ({"k1": b"x" * 31}, "k1", "31 bytes"),
    ({"k1": 12345}, "k1", "bytes or str"),
    ({"k 1": K1}, None, "key id"),
    ({"": K1}, None, "key id"),
    ({"k:1": K1}, None, "key id"),
    ({"k1": K1}, "k2", "sign_with='k2' is not among"),
    ({"k1": K1, "k2": K2}, None, "sign_with must name"),
])
def test_bad_keys_fail_with_the_fix(keys: dict[str, object], sign_with: str | None,
                                    message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Keyring(keys, sign_with)  # type: ignore[arg-type]


def test_a_single_key_is_the_one_signed_with() -> None:
    assert Keyring({"only": K1}, None).sign_with == "only"
    assert Keyring({"k1": K1, "k2": bytearray(K2)}, "k1").key_ids == ["k1", "k2"]
