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
* ``sig``, ``sig_key``: the signature itself.

Canonical form (version 1), bytes. :data:`NAMED` are the fields seawall's producer
writes, in that fixed order (a missing one counts as empty); the *other* covered fields
(headers a producer added, ``E`` of them, usually none) follow, sorted by name::

    b"seawall-sig-v1\n"
    u32(E) u32(len(stream)) u32(len(payload)) u32(len(id)) ... u32(len(step))
           u32(len(other_name_1)) ... u32(len(other_name_E))
           u32(len(other_value_1)) ... u32(len(other_value_E))
    stream payload id type published_at correlation_id causation_id saga saga_id step
           other_name_1 ... other_name_E other_value_1 ... other_value_E

(``u32``: 4 bytes, big-endian.) The count and the lengths make it unambiguous (no field
can bleed into the next); the fixed order and the sorted others make it independent of
the order a producer wrote the fields in; any language can produce it. It is laid out so
that a consumer builds it with a handful of C-level calls (a subset test, a ``map`` over
the named fields, one ``struct.pack``, one join) rather than a Python loop over the
fields: it is made once for every message read.

HMAC is computed from the key's two padded SHA-256 states, prepared once per key (the
inner one already past the version line): the same bytes as ``hmac.digest(key, msg,
"sha256")`` (RFC 2104; a unit test holds them equal) at a fraction of the cost per
message, since the key's own blocks are not hashed again for every message.

Pure: no Redis, no clock. ``Keyring.check`` returns why an entry is refused (or None);
the runtime turns that into a dead letter (``workers.integrity``).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping, MutableMapping

SIG = b"sig"
"""Field: the HMAC-SHA256 of :func:`canonical`, 64 lowercase hex digits."""
SIG_KEY = b"sig_key"
"""Field: the id of the key that made ``sig``."""
VERSION = b"seawall-sig-v1\n"

UNSIGNED = frozenset({
    b"attempt", b"first_failed_at", b"origin_entry_id", b"replayed_from",
    b"traceparent", b"tracestate", SIG, SIG_KEY,
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
_HEAD = struct.Struct(f">{len(NAMED) + 2}I")


def _body(fields: RawFields, stream: bytes) -> bytes:
    """The canonical form after its version line."""
    values = [stream, *map(fields.get, NAMED, _EMPTY)]
    if _KNOWN.issuperset(fields):  # the common case: no header of a producer's own
        return b"".join([_HEAD.pack(0, *map(len, values)), *values])
    names = sorted(fields.keys() - _KNOWN)
    others = [*names, *map(fields.__getitem__, names)]
    head = struct.pack(f">{len(values) + len(others) + 1}I", len(names),
                       *map(len, values), *map(len, others))
    return b"".join([head, *values, *others])


class _Key:
    """One key's HMAC-SHA256, its padded inner (followed by :data:`VERSION`) and outer
    states hashed once."""

    __slots__ = ("inner", "outer")

    def __init__(self, secret: bytes) -> None:
        if len(secret) > _BLOCK:
            secret = hashlib.sha256(secret).digest()
        secret = secret.ljust(_BLOCK, b"\0")
        self.inner = hashlib.sha256(secret.translate(_IPAD) + VERSION)
        self.outer = hashlib.sha256(secret.translate(_OPAD))

    def mac(self, body: bytes) -> bytes:
        """HMAC-SHA256 of :data:`VERSION` + ``body``, as 64 hex digits (ASCII bytes)."""
        inner = self.inner.copy()
        inner.update(body)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest().encode()


def check_key_id(key_id: object) -> str:
    """``key_id`` if it can name a key (ValueError if not): printable ASCII, 1 to 64
    characters, without spaces, since it is written into every signed entry."""
    if (not isinstance(key_id, str) or not 0 < len(key_id) <= 64 or not key_id.isascii()
            or not key_id.isprintable() or " " in key_id):
        raise ValueError(f"signing key id {key_id!r} must be 1 to 64 printable ASCII "
                         "characters without spaces, like 'k2' or '2026-12'")
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

    __slots__ = ("_keys", "_known", "sign_with")

    def __init__(self, keys: Mapping[str, bytes | str], sign_with: str | None) -> None:
        if not keys:
            raise ValueError("signing_keys is empty: give at least one key, "
                             "signing_keys={'k1': secrets.token_hex(32)}")
        prepared: dict[bytes, _Key] = {}
        for key_id, secret in keys.items():
            check_key_id(key_id)
            prepared[key_id.encode()] = _Key(key_bytes(key_id, secret))
        if sign_with is None:
            if len(keys) != 1:
                raise ValueError(f"sign_with must name the key to sign with, one of "
                                 f"{', '.join(map(repr, keys))}")
            sign_with = next(iter(keys))
        elif sign_with not in keys:
            raise ValueError(f"sign_with={sign_with!r} is not among signing_keys "
                             f"({', '.join(map(repr, keys))}): add it to signing_keys")
        self._keys = prepared
        self._known = ", ".join(sorted(keys))
        self.sign_with = sign_with

    @property
    def key_ids(self) -> list[str]:
        return sorted(k.decode() for k in self._keys)

    def sign(self, fields: OutFields, stream: str) -> None:
        """Add ``sig_key`` and ``sig`` to ``fields``, bound for ``stream`` (a signature
        already there is replaced: the fields may have changed since)."""
        fields.pop("sig", None)
        fields.pop("sig_key", None)
        key_id = self.sign_with
        fields["sig_key"] = key_id
        body = _body({_b(k): _b(v) for k, v in fields.items()}, _b(stream))
        fields["sig"] = self._keys[key_id.encode()].mac(body)

    def check(self, fields: RawFields, stream: bytes) -> str | None:
        """Why the entry's signature is refused, or None if a known key signed exactly
        these fields for ``stream``. (Once per message read: kept lean on purpose.)"""
        given = fields.get(SIG)
        key_id = fields.get(SIG_KEY)
        if given is None or key_id is None:
            return self._missing(given, key_id)
        key = self._keys.get(key_id)
        if key is None:
            return self._missing(given, key_id)
        inner = key.inner.copy()
        inner.update(_body(fields, stream))
        outer = key.outer.copy()
        outer.update(inner.digest())
        if hmac.compare_digest(outer.hexdigest().encode(), given):
            return None
        return (f"the signature (key {key_id.decode()!r}) does not match: a signed "
                "field was changed, added or removed after signing, or the message "
                "was signed for another stream")

    def _missing(self, given: bytes | None, key_id: bytes | None) -> str:
        if given is None:
            return ("the message is not signed (no 'sig' field); this app accepts only "
                    "messages signed with one of its signing_keys")
        if key_id is None:
            return "the message has a 'sig' field but no 'sig_key' naming its key"
        return (f"signed with key id {key_id.decode('utf-8', 'replace')[:64]!r}, which "
                f"this app does not have (its keys: {self._known})")
