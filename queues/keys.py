"""Every Redis key seawall uses is built here, and only here.

A user's stream keeps the name the user gave it (``orders``). Every key derived from a
stream carries that name as a hash tag (``{orders}``), so all of them hash to the stream's
slot and one Lua script may touch them all, on a single Redis or on a Redis Cluster.

===========================================  ======  ==============================================
key                                          type    what
===========================================  ======  ==============================================
``orders``                                   stream  the user's stream; any producer may XADD to it
``seawall:{orders}:retry:<handler>``         stream  redeliveries for one handler only (due retries,
                                                     replays)
``seawall:{orders}:delayed:<handler>``       zset    retries waiting for their time; score = due ms
``seawall:{orders}:dlq:<handler>``           stream  dead letters of one handler
``seawall:{orders}:dlq-counts:<handler>``    hash    error type -> dead letters of one handler;
                                                     kept by the scripts that add (dead_letter,
                                                     saga_fail, saga_undo_failed) and remove
                                                     (replay, purge) them; read by ``dlq list``
``seawall:{orders}:breaker:<handler>``       hash    the handler's circuit breaker, fleet-wide
``seawall:{orders}:breaker-log:<handler>``   stream  the breaker's transitions (from, to, reason
                                                     code, at ms), appended by the breaker scripts
                                                     that change its state; capped at about 100
``seawall:{orders}:done:<handler>:<id>``     string  idempotency marker: message <id> completed
``seawall:{orders}:outbox``                  stream  follow-ups committed with the ack of a message
                                                     read from ``orders``, bound for a stream in
                                                     another slot; relayed at once, swept if not
``seawall:{orders}:outbox-sweep``            string  lease of the process sweeping that outbox
``seawall:{saga:<name>}:ledger:<id>``        hash    a saga's state (running, completed,
                                                     compensating, timed_out, compensated,
                                                     failed), times, cause, each step's status,
                                                     memo and error
``seawall:{saga:<name>}:stack:<id>``         list    its committed steps in commit order
``seawall:{saga:<name>}:timeline:<id>``      stream  what happened to it, capped
``seawall:{saga:<name>}:state:<state>``      zset    saga ids in a state, by when they entered it
``seawall:{saga:<name>}:deadlines``          zset    running sagas by deadline (ms)
``seawall:{saga:<name>}:on:<stream>``        stream  events for the step reacting to <stream>
``seawall:{saga:<name>}:undo:<step>``        stream  compensation events of <step>
``seawall:{saga:<name>}:outcome``            stream  finished sagas, for ``on_outcome``
``seawall:registry``                         hash    handler name -> JSON (stream, pool, app, ...)
``seawall:processes``                        hash    consumer name -> JSON heartbeat (pool, pid,
                                                     host, seen_at ms); read by ``status``
``seawall:outcomes``                         hash    ``<handler>\\x1f<kind>`` -> messages settled so
                                                     (kind: ok, retry, dead_letter, fallback,
                                                     parked, skipped, aborted); HINCRBY by the
                                                     pools, read by ``status`` and the demo
``seawall:restarts``                         hash    pool name -> pool processes the supervisor
                                                     restarted after they died
===========================================  ======  ==============================================

One consumer group per handler, named after the handler, on both the user's stream and the
handler's retry stream. Retries and replays never go back to the user's stream: that would
hand the message again to every healthy handler on it.

Key patterns (Redis glob syntax, for ACL rules such as ``seawall acl``) are derived here
too, from the same builders: :func:`glob_escape`, :attr:`HandlerKeys.patterns`,
:attr:`SagaKeys.pattern` and :data:`GLOBAL_KEYS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "seawall"
REGISTRY = f"{PREFIX}:registry"
PROCESSES = f"{PREFIX}:processes"
OUTCOMES = f"{PREFIX}:outcomes"
RESTARTS = f"{PREFIX}:restarts"
GLOBAL_KEYS = (REGISTRY, PROCESSES, OUTCOMES, RESTARTS)
"""The keys every app shares (not derived from a stream)."""

_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob pattern that matches only itself (``*?[]\\`` escaped)."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _check_name(kind: str, value: str) -> str:
    if not value:
        raise ValueError(f"{kind} name must not be empty")
    if "{" in value or "}" in value:
        raise ValueError(
            f"{kind} name {value!r} must not contain '{{' or '}}': seawall uses the stream "
            "name as a Redis Cluster hash tag"
        )
    return value


_DERIVED = re.compile(r"^seawall:\{([^{}]+)\}:[^{}]+$")


def hash_tag(stream: str) -> str:
    """The hash tag of the keys derived from ``stream``: the stream's own name, or, for a
    stream seawall derived itself (a saga's, ``seawall:{saga:checkout}:on:orders``), the tag
    it already carries, so that everything derived from it stays in its slot."""
    derived = _DERIVED.match(stream)
    return derived.group(1) if derived else _check_name("stream", stream)


def check_stream_name(stream: str) -> str:
    """``stream`` if seawall can derive its keys (non-empty, no braces), else ValueError
    naming the fix."""
    if not isinstance(stream, str):
        raise ValueError(f"a stream name must be a string, got {stream!r}")
    return _check_name("stream", stream)


@dataclass(frozen=True, slots=True)
class HandlerKeys:
    """The keys one handler owns on one stream."""

    stream: str
    handler: str

    def __post_init__(self) -> None:
        hash_tag(self.stream)
        _check_name("handler", self.handler)

    @property
    def _base(self) -> str:
        return f"{PREFIX}:{{{hash_tag(self.stream)}}}"

    @property
    def group(self) -> str:
        """The consumer group: the handler's name, on the stream and on the retry stream."""
        return self.handler

    @property
    def retry(self) -> str:
        return f"{self._base}:retry:{self.handler}"

    @property
    def delayed(self) -> str:
        return f"{self._base}:delayed:{self.handler}"

    @property
    def dlq(self) -> str:
        return f"{self._base}:dlq:{self.handler}"

    @property
    def dlq_counts(self) -> str:
        """The dead letters counted by error type, kept by the scripts that move them."""
        return f"{self._base}:dlq-counts:{self.handler}"

    @property
    def breaker(self) -> str:
        return f"{self._base}:breaker:{self.handler}"

    @property
    def breaker_log(self) -> str:
        """The breaker's transitions, a capped stream beside (in the slot of) its hash."""
        return f"{self._base}:breaker-log:{self.handler}"

    def done(self, message_id: str) -> str:
        """Idempotency marker of one message for this handler."""
        return f"{self._base}:done:{self.handler}:{message_id}"

    @property
    def outbox(self) -> str:
        """The outbox of the handler's stream (shared by every handler of that stream)."""
        return outbox(self.stream)

    @property
    def patterns(self) -> tuple[str, ...]:
        """Glob patterns matching every key this handler reads or writes, and no other: its
        stream, its own derived keys (each idempotency marker by one pattern) and its
        stream's outbox. A user limited to these cannot touch another handler's keys."""
        exact = (self.stream, self.retry, self.delayed, self.dlq, self.dlq_counts,
                 self.breaker, self.breaker_log, self.outbox, outbox_sweep_lease(self.stream))
        return (*(glob_escape(k) for k in exact), glob_escape(self.done("")) + "*")

    @property
    def read_streams(self) -> tuple[str, str]:
        """The two streams a handler's consumers read: the user's and its own retry stream."""
        return (self.stream, self.retry)


_DLQ = re.compile(r"^(seawall:\{[^{}]+\}):dlq:(.+)$")


def dlq_counts_of(dlq: str) -> str:
    """The counts hash (:attr:`HandlerKeys.dlq_counts`) of a dead-letter stream key, for
    code given only the stream's key (the saga scripts derive it the same way)."""
    found = _DLQ.match(dlq)
    if not found:
        raise ValueError(f"{dlq!r} is not a dead-letter stream key")
    return f"{found.group(1)}:dlq-counts:{found.group(2)}"


def outbox(stream: str) -> str:
    """The outbox of follow-ups committed with acks of messages read from ``stream``."""
    return f"{PREFIX}:{{{hash_tag(stream)}}}:outbox"


def outbox_sweep_lease(stream: str) -> str:
    """Held by the one process sweeping ``stream``'s outbox, so sweepers do not race."""
    return f"{PREFIX}:{{{hash_tag(stream)}}}:outbox-sweep"


@dataclass(frozen=True, slots=True)
class SagaKeys:
    """The keys of one saga type: all in one hash slot (``{saga:<name>}``), so that a step's
    ack, its saga's ledger and the next step's event change in one script."""

    saga: str

    def __post_init__(self) -> None:
        _check_name("saga", self.saga)
        if ":" in self.saga:
            raise ValueError(f"saga name {self.saga!r} must not contain ':'")

    @property
    def _base(self) -> str:
        return f"{PREFIX}:{{saga:{self.saga}}}"

    def on(self, stream: str) -> str:
        """The stream of events the saga's step reacting to ``stream`` reads."""
        return f"{self._base}:on:{_check_name('stream', stream)}"

    def undo(self, step: str) -> str:
        """The stream of compensation events of one step."""
        return f"{self._base}:undo:{_check_name('step', step)}"

    @property
    def outcome(self) -> str:
        """The stream of finished sagas' outcomes (``on_outcome`` reads it)."""
        return f"{self._base}:outcome"

    def ledger(self, saga_id: str) -> str:
        """Hash: state, times, cause, and each step's status, memo, error."""
        return f"{self._base}:ledger:{saga_id}"

    def stack(self, saga_id: str) -> str:
        """List: the steps that committed, in commit order (compensation pops the end)."""
        return f"{self._base}:stack:{saga_id}"

    def timeline(self, saga_id: str) -> str:
        """Stream, capped: what happened to the saga, in order."""
        return f"{self._base}:timeline:{saga_id}"

    def by_state(self, state: str) -> str:
        """Zset: ids of the sagas in ``state``, scored by when they entered it (ms)."""
        return f"{self._base}:state:{state}"

    @property
    def deadlines(self) -> str:
        """Zset: ids of running sagas, scored by their deadline (ms)."""
        return f"{self._base}:deadlines"

    @property
    def outbox(self) -> str:
        """The outbox of the saga's slot: its steps' follow-ups to streams outside it."""
        return f"{self._base}:outbox"

    @property
    def pattern(self) -> str:
        """A glob pattern matching every key of this saga type (and nothing else)."""
        return glob_escape(self._base) + ":*"

    @property
    def tag(self) -> str:
        """The hash tag every key of this saga carries."""
        return f"saga:{self.saga}"
