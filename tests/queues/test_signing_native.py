"""The C verifier (``queues/_sigcheck.c``) computes exactly what the Python reference
(``queues.signing.PureVerifier``) and the standard library's ``hmac`` compute, on
generated entries: any field names and bytes, headers of a producer's own (more than the
eight the C code keeps without allocating), entries longer than its 2 KiB buffer, keys
longer than a SHA-256 block."""

from __future__ import annotations

import hmac
import sys
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from queues import signing
from queues.envelope import UNCHECKED, Envelope
from queues.signing import (
    _KNOWN,
    MALFORMED,
    MISMATCH,
    NAMED,
    NOT_SIGNED,
    PAYLOAD_TOO_LARGE,
    SIG,
    SIGNED,
    UNKNOWN_KEY,
    VERSION,
    PureVerifier,
    canonical_raw,
)

sigcheck: Any = pytest.importorskip(
    "queues._sigcheck",
    reason="queues._sigcheck was not built (no C compiler or OpenSSL headers when seawall "
           "was installed)")

ANY = sys.maxsize
"""A payload limit no entry reaches."""

names = st.one_of(st.sampled_from(sorted(_KNOWN)), st.binary(max_size=20))
values = st.one_of(st.binary(max_size=40), st.binary(min_size=2000, max_size=5000))
entries = st.dictionaries(names, values, max_size=20)
secrets = st.binary(min_size=32, max_size=150)


def both(secret: bytes) -> tuple[Any, PureVerifier]:
    """The C verifier and the Python one, of the same keys."""
    args = ({b"k1": secret, b"k-2": secret + b"2"}, VERSION, NAMED, _KNOWN, SIG)
    return sigcheck.Verifier(*args), PureVerifier(*args)


@settings(max_examples=200, deadline=None)
@given(entries, st.binary(max_size=30), secrets)
@example({b"x-%d" % i: b"v" * i for i in range(20)}, b"s", b"k" * 32)
@example({b"payload": b"p" * 3000, b"b": b"", b"a": b"1", b"ab": b"2"}, b"s", b"k" * 65)
def test_the_c_and_python_macs_are_the_standard_librarys(fields: dict[bytes, bytes],
                                                          stream: bytes, secret: bytes) -> None:
    native, pure = both(secret)
    expected = hmac.new(secret, canonical_raw(fields, stream), "sha256").hexdigest().encode()

    assert native.mac(fields, stream, b"k1") == expected
    assert pure.mac(fields, stream, b"k1") == expected


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=20), st.one_of(st.text(max_size=40), values),
                       max_size=12), st.text(max_size=20), secrets)
def test_text_fields_sign_as_their_utf8(fields: dict[str, str | bytes], stream: str,
                                        secret: bytes) -> None:
    """A producer's fields (text) are signed as they are: the same MAC as their UTF-8."""
    native, pure = both(secret)
    as_bytes = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    expected = native.mac(as_bytes, stream.encode(), b"k1")
    assert native.mac(fields, stream, b"k1") == pure.mac(fields, stream, b"k1") == expected


@settings(max_examples=150, deadline=None)
@given(entries, st.binary(max_size=30), secrets, st.data())
def test_the_c_and_python_verdicts_agree(fields: dict[bytes, bytes], stream: bytes,
                                         secret: bytes, data: st.DataObject) -> None:
    native, pure = both(secret)
    signed = {**fields, SIG: b"k1:" + pure.mac(fields, stream, b"k1")}
    assert native.verdict(signed, stream, ANY) == pure.verdict(signed, stream, ANY) == SIGNED

    changed = dict(signed)
    name = data.draw(names.filter(lambda n: n not in signing.UNSIGNED), label="changed")
    changed[name] = changed.get(name, b"") + b"!"
    assert native.verdict(changed, stream, ANY) == pure.verdict(changed, stream, ANY) == MISMATCH
    assert native.verdict(signed, stream + b"!", ANY) == MISMATCH

    mac = signed[SIG][3:]
    cases = [(NOT_SIGNED, {k: v for k, v in signed.items() if k != SIG}),
             (MALFORMED, {**signed, SIG: mac}),
             (UNKNOWN_KEY, {**signed, SIG: b"k2:" + mac}),
             (UNKNOWN_KEY, {**signed, SIG: b":" + mac}),
             (MISMATCH, {**signed, SIG: b"k1:" + mac.upper()}),
             (MISMATCH, {**signed, SIG: b"k-2:" + mac}),  # another key's
             (MISMATCH, {**signed, SIG: b"k1:" + mac[:-1]})]
    for verdict, entry in cases:
        assert native.verdict(entry, stream, ANY) == pure.verdict(entry, stream, ANY) == verdict

    # The payload is measured before anything else, and never hashed when too long.
    size = len(fields.get(b"payload", b""))
    for entry in [signed, *(entry for _, entry in cases)]:
        if b"payload" in fields:
            over = size - 1
            assert (native.verdict(entry, stream, over) == pure.verdict(entry, stream, over)
                    == PAYLOAD_TOO_LARGE)
        assert (native.verdict(entry, stream, size) == pure.verdict(entry, stream, size)
                != PAYLOAD_TOO_LARGE)


def test_what_is_not_an_entry_read_from_redis_is_a_type_error() -> None:
    native, _ = both(b"k" * 32)
    with pytest.raises(TypeError, match="dict"):
        native.verdict([(SIG, b"x")], b"s", ANY)
    with pytest.raises(TypeError, match="must be bytes or str, not int"):
        native.verdict({b"payload": 1, SIG: b"k1:x"}, b"s", ANY)
    with pytest.raises(TypeError, match="must be bytes or str, not int"):
        native.mac({1: b"x"}, b"s", b"k1")
    with pytest.raises(UnicodeEncodeError):
        native.mac({"payload": "\ud800"}, b"s", b"k1")
    with pytest.raises(KeyError):
        native.mac({}, b"s", b"k2")
    with pytest.raises(TypeError, match="initialized once"):
        native.__init__({}, VERSION, NAMED, _KNOWN, SIG)
    bare = sigcheck.Verifier.__new__(sigcheck.Verifier)
    with pytest.raises(TypeError, match="not initialized"):
        bare.verdict({SIG: b"k1:x"}, b"s", ANY)


def test_a_version_that_is_not_whole_blocks_is_refused() -> None:
    """The C verifier hashes the version into each key's state once: it must end on a
    block's end, or every message would be hashed from the middle of a block."""
    with pytest.raises(ValueError, match="whole blocks of 64 bytes"):
        sigcheck.Verifier({b"k1": b"k" * 32}, b"seawall-sig-v2\n", NAMED, _KNOWN, SIG)


def test_keyrings_use_the_c_verifier_when_it_was_built() -> None:
    ring = signing.Keyring({"k1": "k" * 32}, "k1")
    assert type(ring._verifier) is signing.NATIVE is sigcheck.Verifier


@settings(max_examples=100, deadline=None)
@given(entries, st.binary(max_size=30), secrets, st.integers(0, 6000), st.data())
def test_the_c_admission_lets_in_what_the_verdict_signs(
        fields: dict[bytes, bytes], stream: bytes, secret: bytes, limit: int,
        data: st.DataObject) -> None:
    """``Keyring.admission``'s C callable (what a pool calls on every entry) and its
    Python twin answer as ``verdict`` does, for an entry checked with its batch
    (``check_all``) and for one checked alone: None for a signed entry within the limit,
    else the refusal made from the verdict and the entry itself."""
    native, pure = both(secret)
    refused: list[tuple[int, Envelope]] = []

    def refuse(verdict: int, entry: Envelope) -> str:
        refused.append((verdict, entry))
        return "refused"

    signed = {**fields, SIG: b"k1:" + pure.mac(fields, stream, b"k1")}
    tampered = {**signed, data.draw(names.filter(lambda n: n not in signing.UNSIGNED)): b"!"}
    for admit in [sigcheck.Admission(native, stream, limit, refuse),
                  signing.PureAdmission(pure, stream, limit, refuse)]:
        batch = [Envelope("s", "1-0", dict(f)) for f in [signed, fields, tampered]]
        alone = [Envelope("s", "1-0", dict(f)) for f in [signed, fields, tampered]]
        admit.check_all(batch)
        for entry, unchecked in zip(batch, alone, strict=True):
            verdict = pure.verdict(entry.fields, stream, limit)
            assert entry.verdict == verdict and unchecked.verdict == UNCHECKED
            for each in [entry, unchecked]:  # the verdict left on it, or made then
                answer = admit(each)
                if verdict == SIGNED:
                    assert answer is None and not refused
                else:
                    assert answer == "refused" and refused == [(verdict, each)]
                refused.clear()


def test_a_checked_entry_is_judged_by_the_verdict_left_on_it() -> None:
    """The check of one entry reads what ``check_all`` left when its batch was read: the
    fields as read from Redis are what was checked, whatever a middleware did since."""
    native, pure = both(b"k" * 32)
    fields = {b"payload": b"{}"}
    signed = {**fields, SIG: b"k1:" + pure.mac(fields, b"s", b"k1")}
    for admit in [sigcheck.Admission(native, b"s", ANY, lambda v, e: v),
                  signing.PureAdmission(pure, b"s", ANY, lambda v, e: v)]:
        good, bad = Envelope("s", "1-0", dict(signed)), Envelope("s", "1-1", dict(fields))
        admit.check_all([good, bad])
        good.fields[b"payload"] = b"changed after the check"
        bad.fields[SIG] = signed[SIG]
        assert (admit(good), admit(bad)) == (None, NOT_SIGNED)
        good.verdict = bad.verdict = UNCHECKED  # (as an entry claimed from a dead consumer)
        assert (admit(good), admit(bad)) == (MISMATCH, None)


def test_the_c_admission_takes_one_entry_and_lets_errors_through() -> None:
    native, _ = both(b"k" * 32)

    def refuse(verdict: int, entry: object) -> None:
        raise RuntimeError(f"refusal {verdict} failed")

    admit = sigcheck.Admission(native, b"s", ANY, refuse)
    with pytest.raises(RuntimeError, match="refusal 1 failed"):
        admit(Envelope("s", "1-0", {b"payload": b"{}"}))
    with pytest.raises(AttributeError, match="verdict"):
        admit(object())
    with pytest.raises(TypeError, match="sequence of entries"):
        admit.check_all(3)
    with pytest.raises(AttributeError, match="fields"):
        admit.check_all([object()])
    with pytest.raises(TypeError, match="must be a dict"):
        admit(Envelope("s", "1-0", [(SIG, b"x")]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one entry"):
        admit(Envelope("s", "1-0", {}), Envelope("s", "1-0", {}))
    with pytest.raises(TypeError, match="callable"):
        sigcheck.Admission(native, b"s", ANY, "not callable")
    bare = sigcheck.Verifier.__new__(sigcheck.Verifier)
    with pytest.raises(TypeError, match="not initialized"):
        sigcheck.Admission(bare, b"s", ANY, refuse)
