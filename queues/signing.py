"""Signed messages: HMAC-SHA256 over what a message means, and the key id it was signed
with, so that a consumer can refuse entries it did not get from a holder of its keys.

What the signature covers (:func:`canonical`): the stream the message was published to,
and every field of the entry except the ones the transport itself rewrites on the way
(:data:`UNSIGNED`). So the payload, ``id``, ``type``, ``published_at``,
``correlation_id``, ``causation_id``, the saga fields (``saga``, ``saga_id``, ``step``) and
any header a producer added are covered: changing one, adding a field or removing one
breaks the signature. Binding the stream means a message signed for ``refunds`` cannot be
copied into ``payments`` and mean "pay". Left out, because retries, replays and tracing
rewrite them and none of them changes what the message asks for:

* ``attempt``, ``first_failed_at``, ``origin_entry_id``: set by retries (``queues.delayed``);
* ``replayed_from``: set by ``dlq replay``;
* ``traceparent``, ``tracestate``: trace context, rewritten by send spans;
* ``sig``, ``sig_key``: the signature itself.

Canonical form (version 1), all bytes, fields sorted by name::

    b"seawall-sig-v1" | len(stream) b":" stream | for each signed field:
        b"\\n" len(name) b":" len(value) b":" name value

Lengths make it unambiguous (no field can bleed into the next); sorting makes it
independent of the order a producer wrote the fields in. Any language can produce it.

HMAC is computed from the key's two padded SHA-256 states, prepared once per key
(:class:`_Key`): the same bytes as ``hmac.digest(key, msg, "sha256")`` (RFC 2104; a unit
test holds them equal), at about two thirds of its cost per message, since the key's
own blocks are not hashed again for every message.

Pure: no Redis, no clock. ``Keyring.check`` returns why an entry is refused (or None);
the runtime turns that into a dead letter (``workers.integrity``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, MutableMapping

SIG = b"sig"
"""Field: the HMAC-SHA256 of :func:`canonical`, 64 lowercase hex digits."""
SIG_KEY = b"sig_key"
"""Field: the id of the key that made ``sig``."""
VERSION = b"seawall-sig-v1"

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
    return canonical_raw({_b(k): _b(v) for k, v in fields.items()}, _b(stream))


def canonical_raw(fields: RawFields, stream: bytes) -> bytes:
    """:func:`canonical` of fields as read from Redis (bytes only): the consumer's path,
    once per message, so it converts nothing."""
    parts = [VERSION, b"%d:" % len(stream), stream]
    for name, value in sorted(fields.items()):
        if name not in UNSIGNED:
            parts += (b"\n%d:%d:" % (len(name), len(value)), name, value)
    return b"".join(parts)


class _Key:
    """One key's HMAC-SHA256, its padded inner and outer states hashed once."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret: bytes) -> None:
        if len(secret) > _BLOCK:
            secret = hashlib.sha256(secret).digest()
        secret = secret.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(secret.translate(_IPAD))
        self._outer = hashlib.sha256(secret.translate(_OPAD))

    def mac(self, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message``, as 64 hex digits (ASCII bytes)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
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
        fields["sig"] = self._keys[key_id.encode()].mac(canonical(fields, stream))

    def check(self, fields: RawFields, stream: bytes) -> str | None:
        """Why the entry's signature is refused, or None if a known key signed exactly
        these fields for ``stream``."""
        given = fields.get(SIG)
        key_id = fields.get(SIG_KEY)
        if given is None:
            return ("the message is not signed (no 'sig' field); this app accepts only "
                    "messages signed with one of its signing_keys")
        if key_id is None:
            return "the message has a 'sig' field but no 'sig_key' naming its key"
        key = self._keys.get(key_id)
        if key is None:
            return (f"signed with key id {key_id.decode('utf-8', 'replace')[:64]!r}, which "
                    f"this app does not have (its keys: {self._known})")
        if not hmac.compare_digest(key.mac(canonical_raw(fields, stream)), given):
            return (f"the signature (key {key_id.decode()!r}) does not match: a signed "
                    "field was changed, added or removed after signing, or the message "
                    "was signed for another stream")
        return None
