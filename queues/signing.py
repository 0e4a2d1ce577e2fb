"""Signed messages: HMAC-SHA256 over what a message means, and the key id it was signed
with, so that a consumer can refuse entries it did not get from a holder of its keys.

What the signature covers (:func:`canonical`): the stream the message was published to,
and every field of the entry except the ones the transport itself rewrites on the way
(:data:`UNSIGNED`). So the payload, ``id``, ``type``, ``published_at``,
``correlation_id``, ``causation_id``, the saga fields (``saga``, ``saga_id``, ``step``) and
any header a producer added are covered: changing one, adding a field, or removing one
that had a value breaks the signature (a missing field signs as an empty one). Binding
the stream means a message signed for ``refunds`` cannot be copied into ``payments`` and
mean "pay". Left out, because retries, replays and tracing
rewrite them and none of them changes what the message asks for:

* ``attempt``, ``first_failed_at``, ``origin_entry_id``: set by retries (``queues.delayed``);
* ``replayed_from``: set by ``dlq replay``;
* ``traceparent``, ``tracestate``: trace context, rewritten by send spans;
* ``sig``: the signature itself.

Canonical form (version 2), bytes. :data:`NAMED` are the fields seawall's producer
writes, in that fixed order (a missing one counts as empty); the *other* covered fields
(headers a producer added, ``E`` of them, usually none) follow, sorted by name::

    b"seawall-sig-v2\n", then zero bytes up to 64 bytes (:data:`VERSION`)
    n(E) n(len(stream)) n(len(payload)) n(len(id)) ... n(len(step))
         n(len(other_name_1)) ... n(len(other_name_E))
         n(len(other_value_1)) ... n(len(other_value_E))
    stream payload id type published_at correlation_id causation_id saga saga_id step
         other_name_1 ... other_name_E other_value_1 ... other_value_E

(``n``: unsigned LEB128, 7 bits a byte from the lowest, the top bit set on every byte but
the last: one byte for a length under 128.) The count and the lengths make it unambiguous
(no field can bleed into the next); the fixed order and the sorted others make it
independent of the order a producer wrote the fields in; any language can produce it. The
version fills one SHA-256 block, so a verifier hashes it once per key, with the key, and
never again; one-byte lengths keep a typical message's form in three blocks (version 1's
fifteen-byte line and four-byte lengths took four).

A consumer checks one signature per message it reads, so the check is made in C where
seawall was built with a compiler and OpenSSL's headers (``queues/_sigcheck.c``, the
:data:`NATIVE` verifier: the entry's fields sorted out in one pass, the form laid out in
one buffer, the HMAC run from the key's prepared SHA-256 states: 0.4 us a message), and
in Python otherwise (:class:`PureVerifier`, the reference: 2.6 us); tests hold the two
equal, and to the standard library's ``hmac``, on generated entries.

Pure: no Redis, no clock. ``Keyring.admission`` is a consumer's check of each entry it
reads (with the C verifier, a C callable: an entry let in runs no Python for it),
``Keyring.verdict`` says whether an entry is refused and ``Keyring.refusal`` why; the
runtime turns a refusal into a dead letter (``workers.integrity``).
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Generic, Protocol, TypeVar

SIG = b"sig"
"""Field: the id of the key that signed, a colon, and the HMAC-SHA256 of :func:`canonical`
in 64 lowercase hex digits (``k1:9f86d0...``). One field rather than two: a consumer reads,
and Redis keeps, one field fewer per message."""
VERSION = b"seawall-sig-v2\n".ljust(64, b"\0")
"""The canonical form's first 64 bytes: its version, one SHA-256 block."""

UNSIGNED = frozenset({
    b"attempt", b"first_failed_at", b"origin_entry_id", b"replayed_from",
    b"traceparent", b"tracestate", SIG,
})
"""Fields the signature does not cover: the transport rewrites them (see above)."""

MIN_KEY_BYTES = 32
"""Shortest key accepted: HMAC-SHA256 is as strong as its key, up to 32 bytes
(``secrets.token_hex(32)`` makes a good one)."""

_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))

RawFields = Mapping[bytes, bytes]
"""Fields as read from Redis."""
OutFields = MutableMapping[str, str | bytes]
"""Fields as a producer builds them (``queues.envelope.encode``)."""


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def canonical(fields: Mapping[bytes, bytes] | Mapping[str, str | bytes],
              stream: str | bytes) -> bytes:
    """The bytes the signature is made over (see the module's docstring), for fields
    with names and values in bytes or text."""
    return VERSION + _body({_b(k): _b(v) for k, v in fields.items()}, _b(stream))


def canonical_raw(fields: RawFields, stream: bytes) -> bytes:
    """:func:`canonical` of fields as read from Redis (bytes only)."""
    return VERSION + _body(fields, stream)


NAMED = (b"payload", b"id", b"type", b"published_at", b"correlation_id", b"causation_id",
         b"saga", b"saga_id", b"step")
"""The covered fields seawall's producer writes, in their canonical order."""
_EMPTY = (b"",) * len(NAMED)
_KNOWN = frozenset(NAMED) | UNSIGNED


def _lengths(counts: list[int]) -> bytes:
    """Each count in unsigned LEB128."""
    if max(counts) < 0x80:
        return bytes(counts)
    out = bytearray()
    for n in counts:
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
    return bytes(out)


def _body(fields: RawFields, stream: bytes) -> bytes:
    """The canonical form after its version."""
    values = [stream, *map(fields.get, NAMED, _EMPTY)]
    if _KNOWN.issuperset(fields):  # the common case: no header of a producer's own
        return b"".join([_lengths([0, *map(len, values)]), *values])
    names = sorted(fields.keys() - _KNOWN)
    others = [*names, *map(fields.__getitem__, names)]
    head = _lengths([len(names), *map(len, values), *map(len, others)])
    return b"".join([head, *values, *others])


SIGNED, NOT_SIGNED, MALFORMED, UNKNOWN_KEY, MISMATCH, PAYLOAD_TOO_LARGE = range(6)
"""A verifier's verdict on an entry (:meth:`PureVerifier.verdict`)."""


class PureVerifier:
    """An app's keys prepared for making and checking signatures, in Python: the
    reference for ``queues/_sigcheck.c`` (:data:`NATIVE`), which computes the same
    bytes in C and is used when it was built.

    Each key's padded inner (followed by the :data:`VERSION` block) and outer SHA-256
    states are hashed once, so a message costs its own blocks only: the same bytes as
    ``hmac.digest(key, VERSION + body, "sha256")`` (RFC 2104; a unit test holds them
    equal)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: dict[bytes, bytes], version: bytes, named: tuple[bytes, ...],
                 known: frozenset[bytes], sig_field: bytes) -> None:
        if (version, named, known, sig_field) != (VERSION, NAMED, _KNOWN, SIG):
            raise ValueError("PureVerifier implements the canonical form of version 2 only")
        self._keys = {key_id: self._prepare(secret) for key_id, secret in keys.items()}

    @staticmethod
    def _prepare(secret: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
        if len(secret) > _BLOCK:
            secret = hashlib.sha256(secret).digest()
        secret = secret.ljust(_BLOCK, b"\0")
        return (hashlib.sha256(secret.translate(_IPAD) + VERSION),
                hashlib.sha256(secret.translate(_OPAD)))

    def _mac(self, fields: RawFields, stream: bytes,
             key: tuple[hashlib._Hash, hashlib._Hash]) -> bytes:
        inner = key[0].copy()
        inner.update(_body(fields, stream))
        outer = key[1].copy()
        outer.update(inner.digest())
        return outer.hexdigest().encode()

    def mac(self, fields: Mapping[bytes, bytes] | Mapping[str, str | bytes],
            stream: str | bytes, key_id: bytes, /) -> bytes:
        """The signature of ``fields`` (names and values in bytes or text, names all of one
        kind) for ``stream`` under ``key_id``: 64 hex digits."""
        raw = {_b(k): _b(v) for k, v in fields.items()}
        return self._mac(raw, _b(stream), self._keys[key_id])

    def verdict(self, fields: dict[bytes, bytes], stream: bytes, limit: int, /) -> int:
        """:data:`SIGNED` if a known key signed exactly these fields for ``stream``, else
        why not (:data:`NOT_SIGNED`, :data:`MALFORMED`, :data:`UNKNOWN_KEY`,
        :data:`MISMATCH`); first of all :data:`PAYLOAD_TOO_LARGE`, unhashed, for a payload
        longer than ``limit`` bytes (a consumer's size limit, checked in the same call: an
        oversized entry costs its length, not an HMAC over it)."""
        payload = fields.get(NAMED[0])
        if payload is not None and len(payload) > limit:
            return PAYLOAD_TOO_LARGE
        given = fields.get(SIG)
        if given is None:
            return NOT_SIGNED
        key_id, colon, mac = given.rpartition(b":")
        if not colon:
            return MALFORMED
        key = self._keys.get(key_id)
        if key is None:
            return UNKNOWN_KEY
        return SIGNED if hmac.compare_digest(self._mac(fields, stream, key), mac) else MISMATCH


class SignatureVerifier(Protocol):
    """What :class:`Keyring` asks of a verifier (:class:`PureVerifier`, or the C one)."""

    def verdict(self, fields: dict[bytes, bytes], stream: bytes, limit: int, /) -> int: ...
    def mac(self, fields: dict[bytes, bytes] | dict[str, str | bytes], stream: str | bytes,
            key_id: bytes, /) -> bytes: ...


VerifierFactory = Callable[[dict[bytes, bytes], bytes, tuple[bytes, ...], frozenset[bytes],
                            bytes], SignatureVerifier]
"""A verifier class: ``(keys, version, named, known, sig_field)``."""

NATIVE: VerifierFactory | None
"""The C verifier (``queues/_sigcheck.c``), None where it was not built (``pip install``
compiles it when a C compiler and OpenSSL's headers are there)."""
try:
    from queues._sigcheck import Admission as _NativeAdmission
    from queues._sigcheck import Verifier as _NativeVerifier
except ImportError:
    NATIVE = None
else:
    NATIVE = _NativeVerifier


class Entry(Protocol):
    """An entry as a consumer holds it (``queues.envelope.Envelope``): its fields, and the
    verdict its batch's check left on it (-1: none)."""

    fields: dict[bytes, bytes]
    verdict: int


E = TypeVar("E", bound=Entry)
R = TypeVar("R")
E_in = TypeVar("E_in", bound=Entry, contravariant=True)
R_out = TypeVar("R_out", covariant=True)


class EntryCheck(Protocol[E_in, R_out]):
    """A consumer's check of the entries it reads (:meth:`Keyring.admission`)."""

    def __call__(self, entry: E_in, /) -> R_out | None:
        """None to let ``entry`` in, else the refusal."""

    def check_all(self, entries: Sequence[E_in], /) -> None:
        """Check a batch as it is read, leaving each verdict on its entry."""


class PureAdmission(Generic[E, R]):
    """:meth:`Keyring.admission` with the Python verifier: the C one's twin."""

    __slots__ = ("_limit", "_refuse", "_stream", "_verdict")

    def __init__(self, verifier: SignatureVerifier, stream: bytes, limit: int,
                 refuse: Callable[[int, E], R]) -> None:
        self._verdict = verifier.verdict
        self._stream = stream
        self._limit = limit
        self._refuse = refuse

    def __call__(self, entry: E, /) -> R | None:
        verdict = entry.verdict
        if verdict < 0:
            verdict = self._verdict(entry.fields, self._stream, self._limit)
        return self._refuse(verdict, entry) if verdict else None

    def check_all(self, entries: Sequence[E], /) -> None:
        for entry in entries:
            entry.verdict = self._verdict(entry.fields, self._stream, self._limit)


def check_key_id(key_id: object) -> str:
    """``key_id`` if it can name a key (ValueError if not): printable ASCII, 1 to 64
    characters, without spaces or colons, since it is written into every signed entry
    before a colon."""
    if (not isinstance(key_id, str) or not 0 < len(key_id) <= 64 or not key_id.isascii()
            or not key_id.isprintable() or " " in key_id or ":" in key_id):
        raise ValueError(f"signing key id {key_id!r} must be 1 to 64 printable ASCII "
                         "characters without spaces or ':', like 'k2' or '2026-12'")
    return key_id


def key_bytes(key_id: str, secret: object) -> bytes:
    """A key's bytes (a ``str`` key is its UTF-8), or ValueError naming the problem."""
    if isinstance(secret, str):
        raw = secret.encode()
    elif isinstance(secret, bytes | bytearray):
        raw = bytes(secret)
    else:
        raise ValueError(f"signing key {key_id!r} must be bytes or str, not "
                         f"{type(secret).__name__}")
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"signing key {key_id!r} is {len(raw)} bytes long; use at least "
                         f"{MIN_KEY_BYTES} random bytes (secrets.token_hex(32) makes one)")
    return raw


class Keyring:
    """The keys an app accepts (every one of ``keys``) and the one it signs with
    (``sign_with``). Raises ValueError, naming the fix, for a key too short, a bad key id,
    or ``sign_with`` not among the keys."""

    __slots__ = ("_key_ids", "_known", "_verifier", "sign_with")

    def __init__(self, keys: Mapping[str, bytes | str], sign_with: str | None) -> None:
        if not keys:
            raise ValueError("signing_keys is empty: give at least one key, "
                             "signing_keys={'k1': secrets.token_hex(32)}")
        secrets: dict[bytes, bytes] = {}
        for key_id, secret in keys.items():
            check_key_id(key_id)
            secrets[key_id.encode()] = key_bytes(key_id, secret)
        if sign_with is None:
            if len(keys) != 1:
                raise ValueError(f"sign_with must name the key to sign with, one of "
                                 f"{', '.join(map(repr, keys))}")
            sign_with = next(iter(keys))
        elif sign_with not in keys:
            raise ValueError(f"sign_with={sign_with!r} is not among signing_keys "
                             f"({', '.join(map(repr, keys))}): add it to signing_keys")
        self._verifier = (NATIVE or PureVerifier)(secrets, VERSION, NAMED, _KNOWN, SIG)
        self._key_ids = sorted(keys)
        self._known = ", ".join(self._key_ids)
        self.sign_with = sign_with

    @property
    def key_ids(self) -> list[str]:
        return list(self._key_ids)

    def sign(self, fields: OutFields, stream: str) -> None:
        """Add ``sig`` (``<key id>:<HMAC>``) to ``fields``, bound for ``stream`` (a
        signature already there is replaced: the fields may have changed since)."""
        fields.pop("sig", None)
        key_id = self.sign_with.encode()
        # (a dict of text as a producer builds it goes to the verifier as it is: the C one
        # hashes each str's UTF-8 in place, with no copy of the fields to bytes)
        own = fields if type(fields) is dict else dict(fields)
        fields["sig"] = key_id + b":" + self._verifier.mac(own, stream, key_id)

    @property
    def verdict(self) -> Callable[[dict[bytes, bytes], bytes, int], int]:
        """``verdict(fields, stream, limit)``: :data:`SIGNED` (0) if a known key signed
        exactly these fields for ``stream``, :data:`PAYLOAD_TOO_LARGE` for a payload over
        ``limit`` bytes, else why not (:meth:`refusal` says it in words). A consumer
        checks the entries it reads with :meth:`admission`, which calls the same check."""
        return self._verifier.verdict

    def admission(self, stream: bytes, limit: int,
                  refuse: Callable[[int, E], R]) -> EntryCheck[E, R]:
        """One consumer's check of each entry it reads from ``stream``: None for an entry
        a known key signed for ``stream`` with a payload of at most ``limit`` bytes, else
        ``refuse(verdict, entry)``. Its ``check_all`` checks a batch as it is read (the
        check of one entry then reads the verdict left on it). With the C verifier both
        are C: nothing runs in Python for an entry let in."""
        if NATIVE is not None and isinstance(self._verifier, _NativeVerifier):
            native: EntryCheck[E, R] = _NativeAdmission(self._verifier, stream, limit, refuse)
            return native
        return PureAdmission(self._verifier, stream, limit, refuse)

    def check(self, fields: dict[bytes, bytes], stream: bytes) -> str | None:
        """Why the entry's signature is refused, or None if a known key signed exactly
        these fields for ``stream``."""
        verdict = self._verifier.verdict(fields, stream, sys.maxsize)
        return None if verdict == SIGNED else self.refusal(verdict, fields)

    def refusal(self, verdict: int, fields: dict[bytes, bytes]) -> str:
        """Why an entry with this (non-zero) verdict is refused, for its dead letter."""
        if verdict == NOT_SIGNED:
            return ("the message is not signed (no 'sig' field); this app accepts only "
                    "messages signed with one of its signing_keys")
        if verdict == MALFORMED:
            return ("the message's 'sig' field is not '<key id>:<signature>' (no ':' in "
                    f"{fields[SIG][:80]!r})")
        key_id = fields[SIG].rpartition(b":")[0].decode("utf-8", "replace")
        if verdict == UNKNOWN_KEY:
            return (f"signed with key id {key_id[:64]!r}, which this app does not have "
                    f"(its keys: {self._known})")
        return (f"the signature (key {key_id!r}) does not match: a signed field was "
                "changed, added or removed after signing, or the message was signed for "
                "another stream")
