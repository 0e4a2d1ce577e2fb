"""What an app sends and accepts (pure: no Redis): payload limits on publish and on
arrival, signing on publish, the signature checked on arrival, and the app's options
checked when it is built."""

from __future__ import annotations

import pytest

from queues import signing
from queues.envelope import Envelope, encode
from queues.keys import SagaKeys
from workers.app import App
from workers.errors import (
    ConfigError,
    MessageRejected,
    MessageTooLarge,
    NonRetryable,
    PayloadTooLarge,
    SignatureError,
)
from workers.integrity import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    PAYLOAD_SIZE,
    SIGNATURE_REJECTED,
    TOO_LARGE,
    Integrity,
    script_written,
)
from workers.outcome import Kind

KEY = "a-key-of-forty-characters-or-so-0123456789"
STREAM = "orders"


@pytest.fixture(params=["c", "python"])
def verifier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each signing test runs with the C check (where it was built) and the Python one."""
    if request.param == "python":
        monkeypatch.setattr(signing, "NATIVE", None)
    elif signing.NATIVE is None:
        pytest.skip("queues._sigcheck was not built")
    return str(request.param)


def arrived(fields: dict[str, str | bytes], stream: str = STREAM) -> Envelope:
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    return Envelope(stream, "1700000000000-0", raw)


def test_the_default_limit_is_one_mib_and_signing_is_off() -> None:
    integrity = App("shop").integrity

    assert integrity.max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES == 1024 * 1024
    assert not integrity.signs
    fields = encode({"n": 1})
    integrity.seal(STREAM, fields)
    assert "sig" not in fields


def test_publishing_a_payload_over_the_limit_names_its_size_and_the_limit() -> None:
    integrity = Integrity(max_payload_bytes=100)
    fields = encode("x" * 101)

    with pytest.raises(PayloadTooLarge, match=r"101 bytes .*'orders'.*max_payload_bytes=100"):
        integrity.seal(STREAM, fields)
    integrity.seal(STREAM, encode("x" * 100))  # the limit itself is allowed


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    integrity = Integrity(max_payload_bytes=100)

    with pytest.raises(PayloadTooLarge, match="102 bytes"):
        integrity.seal(STREAM, encode('"' + "é" * 50 + '"'))


def test_an_entry_over_the_limit_is_refused_without_its_payload() -> None:
    admit = Integrity(max_payload_bytes=100).admission(STREAM)
    envelope = arrived({"payload": "x" * 500, "id": "m1", "type": "Big"})

    outcome = admit(envelope)

    assert outcome is not None and outcome.kind is Kind.DEAD_LETTER
    assert outcome.reason == TOO_LARGE
    assert isinstance(outcome.error, MessageTooLarge)
    assert "500 bytes" in str(outcome.error) and "100" in str(outcome.error)
    assert b"payload" not in envelope.fields
    assert envelope.fields[PAYLOAD_SIZE] == b"500"
    assert envelope.fields[b"id"] == b"m1"


def test_an_entry_within_the_limit_unsigned_app_is_let_in() -> None:
    admit = Integrity(max_payload_bytes=100).admission(STREAM)
    envelope = arrived({"payload": "x" * 100})

    assert admit(envelope) is None
    assert admit(arrived({"id": "no payload: the decoder's business"})) is None


def test_a_signing_app_signs_what_it_publishes_and_accepts_it(verifier: str) -> None:
    integrity = Integrity(signing_keys={"k1": KEY}, sign_with="k1")
    admit = integrity.admission(STREAM)
    assert (type(admit).__module__ == "queues._sigcheck") is (verifier == "c")
    fields = encode({"n": 1})
    integrity.seal(STREAM, fields)

    assert isinstance(fields["sig"], bytes) and fields["sig"].startswith(b"k1:")
    assert admit(arrived(fields)) is None


@pytest.mark.parametrize("tamper", ["unsigned", "payload", "stream", "key"])
def test_a_signing_app_refuses_entries_with_a_signature_error(tamper: str,
                                                             verifier: str) -> None:
    integrity = Integrity(signing_keys={"k1": KEY})
    fields = encode({"n": 1})
    stream = STREAM
    if tamper != "unsigned":
        integrity.seal(STREAM, fields)
    if tamper == "payload":
        fields["payload"] = '{"n":2}'
    elif tamper == "stream":
        stream = "refunds"
    elif tamper == "key":
        fields["sig"] = b"k7:" + bytes(fields["sig"]).partition(b":")[2]

    outcome = integrity.admission(stream)(arrived(fields, stream))

    assert outcome is not None and outcome.kind is Kind.DEAD_LETTER
    assert outcome.reason == SIGNATURE_REJECTED
    assert isinstance(outcome.error, SignatureError)
    reason = {"unsigned": "not signed", "payload": "does not match",
              "stream": "does not match", "key": "key id 'k7'"}[tamper]
    assert reason in str(outcome.error)


def test_size_is_checked_before_the_signature(verifier: str) -> None:
    integrity = Integrity(signing_keys={"k1": KEY}, max_payload_bytes=10)
    envelope = arrived({"payload": "x" * 50})

    outcome = integrity.admission(STREAM)(envelope)

    # (one call to the verifier measures the payload first, and hashes nothing)
    assert outcome is not None and isinstance(outcome.error, MessageTooLarge)
    assert outcome.reason == TOO_LARGE
    assert b"payload" not in envelope.fields and envelope.fields[PAYLOAD_SIZE] == b"50"


def test_refusals_are_never_retried_nor_breaker_failures() -> None:
    for error in (SignatureError("x"), MessageTooLarge("x")):
        assert isinstance(error, MessageRejected) and isinstance(error, NonRetryable)
    assert issubclass(PayloadTooLarge, NonRetryable) and issubclass(PayloadTooLarge, ValueError)
    assert not issubclass(PayloadTooLarge, MessageRejected)


def test_streams_only_the_saga_scripts_write_are_not_signature_checked() -> None:
    keys = SagaKeys("checkout")
    assert script_written(keys.undo("charge"))
    assert script_written(keys.outcome)
    assert not script_written(keys.on("orders"))
    assert not script_written("orders")
    assert not script_written("seawall:{orders}:retry:h")

    integrity = Integrity(signing_keys={"k1": KEY})
    undo = arrived({"payload": "{}", "saga": "checkout"}, keys.undo("charge"))
    assert integrity.admission(keys.undo("charge"))(undo) is None
    assert integrity.admission(keys.on("orders"))(arrived({"payload": "{}"})) is not None


@pytest.mark.parametrize("options,message", [
    ({"signing_keys": {"k1": "short"}}, "at least 32"),
    ({"signing_keys": {"k1": KEY}, "sign_with": "k2"}, "not among signing_keys"),
    ({"sign_with": "k1"}, "needs signing_keys"),
    ({"signing_keys": [("k1", KEY)]}, "must be a dict"),
    ({"max_payload_bytes": 0}, "positive"),
    ({"max_payload_bytes": 1.5}, "whole number"),
])
def test_the_app_checks_its_options_when_built(options: dict[str, object],
                                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        App("shop", **options)  # type: ignore[arg-type]


def test_app_publishing_checks_the_size_before_writing_anything() -> None:
    # (no Redis is reached: the error comes first; the client is never made)
    app = App("shop", max_payload_bytes=10, redis_url="redis://127.0.0.1:1/0")

    with pytest.raises(PayloadTooLarge):
        app.publish(STREAM, "x" * 11)
    with pytest.raises(PayloadTooLarge):
        app.publish_many(STREAM, ['"ok"', "x" * 11])
    assert app._sync_client is None


class Sink:
    def __init__(self) -> None:
        self.staged: list[object] = []

    def stage(self, follow_up: object) -> None:
        self.staged.append(follow_up)

    def remember(self, memo: bytes) -> None:
        pass


def test_a_handlers_follow_ups_are_sealed_for_their_target_stream() -> None:
    from workers.context import Context
    from workers.outcome import FollowUp

    integrity = Integrity(signing_keys={"k1": KEY}, max_payload_bytes=50)
    sink = Sink()
    ctx = Context(sink, "billing.charge", STREAM, arrived({"payload": "{}", "id": "m1"}),
                  seal=integrity.seal)

    ctx.publish_sync("payments", {"n": 1})
    with pytest.raises(PayloadTooLarge):
        ctx.publish_sync("payments", {"blob": "x" * 100})

    [staged] = sink.staged
    assert isinstance(staged, FollowUp)
    assert integrity.admission("payments")(arrived(staged.fields, "payments")) is None


def test_seawall_run_warns_when_signatures_are_checked_in_python(
        monkeypatch: pytest.MonkeyPatch) -> None:
    signing_app = Integrity(signing_keys={"k1": KEY})
    assert Integrity().warnings() == []
    monkeypatch.setattr(signing, "NATIVE", None)
    (warning,) = signing_app.warnings()
    assert "checked in Python" in warning and "libssl-dev" in warning
    assert Integrity().warnings() == []
