"""What an app sends and accepts: payload size limits and, when it has ``signing_keys``,
signed messages (``queues.signing``).

Outbound, :meth:`Integrity.seal` runs on every message the app writes from Python
(``app.publish`` and its kin, ``ctx.publish``, a saga's start and its steps' events): a
payload over ``max_payload_bytes`` raises :class:`PayloadTooLarge` before anything is
written; with keys, the message is signed with ``sign_with`` for the stream it goes to.

Inbound, :meth:`Integrity.admission` runs once per message in the handler's decode step
(``workers.runtime.stack.Invoke``), before the payload is decoded: an entry whose payload
is too large, or (with keys) whose signature is missing, wrong or under an unknown key,
gets a dead-letter outcome at once, and its handler never runs. (With keys, the
signatures of a batch are checked together as it is read, ``check_all``, and each verdict
waits on its entry for that step: a loop keeps the hashing code and its tables in the
CPU's nearest caches, which one check between two messages' Python never finds.) Such a
refusal is never retried and never counts against the breaker (both errors are
:class:`MessageRejected`, a :class:`NonRetryable`), and a saga step treats it as no event
of its saga at all. The size is checked first, so an oversized entry costs a length, not
an HMAC over it; its payload is dropped from the entry then, and its dead letter keeps
every other field and ``payload_size`` instead.

Streams that only seawall's own scripts write (a saga's compensation and outcome streams,
made inside Redis from the saga's ledger) carry no signature: their handlers check sizes
only. Who may write there is the ACL's business (``seawall acl``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping, Sequence

from queues import signing
from queues.envelope import PAYLOAD, Envelope
from queues.signing import EntryCheck, Keyring
from workers.errors import ConfigError, MessageTooLarge, PayloadTooLarge, SignatureError
from workers.outcome import Outcome

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
"""1 MiB: far above any event a handler should carry (put big things in a store and send
their address), far below what would make Redis or a pool process suffer."""

PAYLOAD_SIZE = b"payload_size"
"""Field a dead letter of an oversized entry gets instead of its payload."""

SIGNATURE_REJECTED = "signature rejected"
TOO_LARGE = "payload too large"

_SCRIPT_WRITTEN = re.compile(r"^seawall:\{saga:[^{}]+\}:(undo:.+|outcome)$")
"""The saga streams only the saga scripts write (``SagaKeys.undo``, ``SagaKeys.outcome``)."""


def script_written(stream: str) -> bool:
    """True for a stream whose entries seawall's Lua scripts make, never a producer."""
    return _SCRIPT_WRITTEN.match(stream) is not None


Admit = EntryCheck[Envelope, Outcome]
"""One handler's check of each entry it reads: called with one, a dead-letter outcome for
an entry refused at the door, None to let it in; ``check_all`` runs on each batch as it
is read (``workers.runtime.consumer``)."""


class Admission:
    """The check of an app without keys: the payload's size. Built once at pool start."""

    __slots__ = ("_limit",)

    def __init__(self, limit: int) -> None:
        self._limit = limit

    def __call__(self, envelope: Envelope, /) -> Outcome | None:
        payload = envelope.fields.get(PAYLOAD)
        if payload is not None and len(payload) > self._limit:
            return too_large(envelope, self._limit)
        return None

    def check_all(self, envelopes: Sequence[Envelope], /) -> None:
        """Nothing: a length is measured when its message runs."""


def too_large(envelope: Envelope, limit: int) -> Outcome:
    """The dead letter of an entry whose payload is over ``limit``: the payload is dropped
    from the entry (not kept, not dead-lettered), its size recorded instead."""
    fields = envelope.fields
    size = len(fields.pop(PAYLOAD))
    fields[PAYLOAD_SIZE] = str(size).encode()
    envelope.as_read = False
    return Outcome.dead_letter(MessageTooLarge(
        f"payload of {size} bytes is over this app's max_payload_bytes={limit}; "
        "dead-lettered without it"), TOO_LARGE)


class Refusal:
    """What a signing app's check (``Keyring.admission``) returns for an entry it does not
    let in: the size's dead letter, or a :class:`SignatureError` naming the reason. Only
    refused entries come here: the check of one let in runs in C, where it was built."""

    __slots__ = ("_keyring", "_limit")

    def __init__(self, keyring: Keyring, limit: int) -> None:
        self._keyring = keyring
        self._limit = limit

    def __call__(self, verdict: int, envelope: Envelope) -> Outcome:
        if verdict == signing.PAYLOAD_TOO_LARGE:
            return too_large(envelope, self._limit)
        return Outcome.dead_letter(
            SignatureError(self._keyring.refusal(verdict, envelope.fields)),
            SIGNATURE_REJECTED)


class Integrity:
    """An app's limits and keys (``App(max_payload_bytes=, signing_keys=, sign_with=)``)."""

    __slots__ = ("keyring", "max_payload_bytes")

    def __init__(self, *, signing_keys: Mapping[str, bytes | str] | None = None,
                 sign_with: str | None = None,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        if (isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int)
                or max_payload_bytes <= 0):
            raise ConfigError(f"max_payload_bytes must be a positive whole number of bytes, "
                              f"got {max_payload_bytes!r}")
        self.max_payload_bytes = max_payload_bytes
        self.keyring: Keyring | None = None
        if signing_keys is None:
            if sign_with is not None:
                raise ConfigError(f"sign_with={sign_with!r} needs signing_keys: "
                                  f"App(signing_keys={{{sign_with!r}: ...}}, "
                                  f"sign_with={sign_with!r})")
            return
        if not isinstance(signing_keys, Mapping):
            raise ConfigError("signing_keys must be a dict of key id -> key, like "
                              "{'k1': secrets.token_hex(32)}")
        try:
            self.keyring = Keyring(signing_keys, sign_with)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def signs(self) -> bool:
        return self.keyring is not None

    def warnings(self) -> list[str]:
        """What ``seawall run`` says at start: signatures checked in Python, where the C
        check was not built, cost several times as much per message."""
        if self.keyring is None or signing.NATIVE is not None:
            return []
        return ["signatures are checked in Python (about 2.5 us a message instead of 0.4): "
                "seawall's C check (queues._sigcheck) was not built; reinstall seawall "
                "where a C compiler and OpenSSL's headers (libssl-dev) are installed"]

    def seal(self, stream: str, fields: MutableMapping[str, str | bytes]) -> None:
        """Check the payload's size (:class:`PayloadTooLarge`) and, with keys, sign the
        message for ``stream``. Call it last, once the fields are final (the trace context
        may still change: it is not signed)."""
        payload = fields.get("payload")
        if payload is not None and len(payload) * 4 > self.max_payload_bytes:
            # (a str's UTF-8 is at most 4 bytes a character: most payloads are never encoded)
            size = len(payload if isinstance(payload, bytes) else payload.encode())
            if size > self.max_payload_bytes:
                raise PayloadTooLarge(
                    f"payload of {size} bytes for stream {stream!r} is over the app's "
                    f"max_payload_bytes={self.max_payload_bytes}; nothing was published "
                    "(send large data by reference, or raise App(max_payload_bytes=))")
        if self.keyring is not None:
            self.keyring.sign(fields, stream)

    def sign(self, stream: str, fields: MutableMapping[str, str | bytes]) -> None:
        """Sign again for ``stream`` (fields rewritten after :meth:`seal`, as a saga step's
        events are); nothing without keys."""
        if self.keyring is not None:
            self.keyring.sign(fields, stream)

    def admission(self, stream: str) -> Admit:
        """The check of entries a handler of ``stream`` reads: the size alone, or (with
        keys) the size and the signature in one call to the verifier, which measures the
        payload before it hashes."""
        if self.keyring is None or script_written(stream):
            return Admission(self.max_payload_bytes)
        return self.keyring.admission(stream.encode(), self.max_payload_bytes,
                                      Refusal(self.keyring, self.max_payload_bytes))
