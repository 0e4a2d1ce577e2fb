"""A handler's circuit breaker in Redis: one typed wrapper per Lua script.

The breaker's state lives in one hash (``HandlerKeys.breaker``) so that every consumer on
every host opens and closes together; every change goes through a Lua script, because a
breaker read in Python and written back races with the rest of the fleet (pybreaker's
Redis storage does exactly that). The state machine itself is specified, readably and
purely, in ``workers.breaker``; the scripts are its atomic copy, and a randomized test
checks that they agree.

``queues`` does not import ``workers``, so these functions take plain values: a
:class:`BreakerParams`, outcome codes (``SUCCESS`` ... ``IGNORED``) and times in
milliseconds. ``now_ms=None`` means "the Redis server's clock", which is what production
code should pass: one clock for the whole fleet, so host clock skew cannot shorten or
stretch an open period. Tests pass their own clock.

Per read batch a consumer calls :func:`acquire` once, reads at most ``Grant.permits``
messages (no limit when ``None``), and reports their outcomes with
:func:`queue_record_outcomes` on the pipeline that carries its XACKs, passing the grant's
``lease``, even when it read nothing: recording releases the lease.

Every script that changes the state appends the transition (from, to, a reason code, the
time) to the breaker's log (``HandlerKeys.breaker_log``, a stream capped at about 100
entries, in the hash's slot), in the same atomic step: each transition is there exactly
once, whichever process caused it. :func:`read_transitions_sync` reads it; :data:`REASONS`
says each code in words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio as aioredis

from queues.keys import PREFIX, HandlerKeys
from queues.scripts import LuaScript

SUCCESS = 0
FAILURE = 1
SLOW_SUCCESS = 2
SLOW_FAILURE = 3
IGNORED = 4
OUTCOME_CODES = frozenset({SUCCESS, FAILURE, SLOW_SUCCESS, SLOW_FAILURE, IGNORED})

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
FORCED_OPEN = "forced_open"
DISABLED = "disabled"
STATES = (CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, DISABLED)

_RECORD = LuaScript("breaker_record")
_ACQUIRE = LuaScript("breaker_acquire")
_ADMIN = LuaScript("breaker_admin")
_RENEW = LuaScript("breaker_renew")
_LEASE = "lease:"

REASONS: Mapping[str, str] = {
    "failure_rate": "the failure rate reached its threshold",
    "slow_call_rate": "the slow-call rate reached its threshold",
    "open_elapsed": "open_for has passed: probes may run",
    "probe_failed": "a probe failed",
    "probes_slow": "too many probes were slow",
    "probes_succeeded": "the probes succeeded",
    "forced_open": "forced open by an operator",
    "forced_close": "closed by an operator",
    "reset": "reset by an operator",
    "disabled": "disabled by an operator",
}
"""The reason codes the scripts write to the breaker's log, in words."""


@dataclass(frozen=True, slots=True)
class BreakerParams:
    """What the scripts need of a breaker's configuration (``CircuitBreaker.params()``)."""

    window: int
    min_calls: int
    failure_rate: float
    slow_call_rate: float
    open_for_ms: int
    half_open_calls: int

    def args(self) -> list[int | float]:
        """ARGV[2..7] of every breaker script."""
        return [self.window, self.min_calls, self.failure_rate, self.slow_call_rate,
                self.open_for_ms, self.half_open_calls]

    def wire_args(self) -> tuple[bytes, ...]:
        """:meth:`args` already encoded, for a caller that sends them with every batch
        (redis-py encodes bytes for free, numbers with a ``repr`` each)."""
        return tuple(repr(a).encode() for a in self.args())


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to "may I read now?" (:func:`acquire`)."""

    state: str
    may_read: bool
    permits: int | None
    """How many messages the caller may read: ``None`` = no limit (closed or disabled)."""
    lease: str | None
    """Half-open probe lease: pass it to the record call that reports these messages."""
    open_until_ms: int | None
    retry_in_ms: int | None
    """When ``may_read`` is false: ask again after this long (``None``: an operator must act).
    In half-open this is when the oldest lease expires; a probe usually reports sooner."""


@dataclass(frozen=True, slots=True)
class RecordResult:
    """The breaker after a batch was recorded; ``changed`` when it moved to another state."""

    state: str
    changed: bool
    open_until_ms: int | None
    calls: int
    failures: int
    slow_calls: int


@dataclass(frozen=True, slots=True)
class AdminResult:
    state: str
    open_until_ms: int | None


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: str
    permits: int
    expires_ms: int


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """Everything the breaker hash holds, read in one HGETALL (atomic)."""

    state: str = CLOSED
    window: tuple[int, ...] = ()
    opened_at_ms: int | None = None
    open_until_ms: int | None = None
    probe_calls: int = 0
    probe_slow: int = 0
    leases: tuple[LeaseInfo, ...] = ()
    lease_seq: int = 0

    @property
    def calls(self) -> int:
        """Calls in the sliding window."""
        return len(self.window)

    @property
    def failures(self) -> int:
        return sum(1 for c in self.window if c in (FAILURE, SLOW_FAILURE))

    @property
    def slow_calls(self) -> int:
        return sum(1 for c in self.window if c in (SLOW_SUCCESS, SLOW_FAILURE))

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.window else 0.0

    @property
    def slow_rate(self) -> float:
        return self.slow_calls / self.calls if self.window else 0.0


def _keys(keys: HandlerKeys) -> list[str]:
    """KEYS of the scripts that may change the state: the hash, then its log."""
    return [keys.breaker, keys.breaker_log]


@lru_cache(maxsize=1024)
def _log_key_of(breaker_key: bytes) -> bytes:
    """The log beside a breaker hash, for a caller that passes only the hash's key."""
    text = breaker_key.decode()
    opening = f"{PREFIX}:{{"
    head, found, handler = text.partition("}:breaker:")
    keys = HandlerKeys(head[len(opening):], handler) if found else None
    if keys is None or keys.breaker != text:
        raise ValueError(f"not a breaker key: {breaker_key!r}")
    return keys.breaker_log.encode()


def _s(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _ms_or_none(raw: Any) -> int | None:
    value = int(raw)
    return value if value > 0 else None


def _now_arg(now_ms: int | None) -> int | str:
    return "" if now_ms is None else int(now_ms)


def _check_outcomes(outcomes: Sequence[int]) -> list[int]:
    codes = [int(o) for o in outcomes]
    for code in codes:
        if code not in OUTCOME_CODES:
            raise ValueError(f"unknown breaker outcome code {code!r}; use 0..4")
    return codes


def encode_outcomes(outcomes: Sequence[int]) -> bytes:
    """Outcome codes as the record script takes them: one ASCII digit per outcome."""
    return "".join(map(str, _check_outcomes(outcomes))).encode()


def _record_args(params: BreakerParams, outcomes: Sequence[int], now_ms: int | None,
                 lease: str | None) -> list[Any]:
    return [_now_arg(now_ms), *params.args(), lease or "", encode_outcomes(outcomes)]


def parse_record_result(reply: Any) -> RecordResult:
    """The reply of ``breaker_record.lua`` (as found in a pipeline's ``execute()`` list)."""
    state, changed, open_until, calls, failures, slow = reply
    return RecordResult(_s(state), bool(int(changed)), _ms_or_none(open_until),
                        int(calls), int(failures), int(slow))


async def record_outcomes(
    client: aioredis.Redis,
    keys: HandlerKeys,
    params: BreakerParams,
    outcomes: Sequence[int],
    now_ms: int | None = None,
    *,
    lease: str | None = None,
) -> RecordResult:
    """Record a batch of outcome codes and make the transitions they cause; releases ``lease``."""
    args = _record_args(params, outcomes, now_ms, lease)
    return parse_record_result(await _RECORD(client, _keys(keys), args))


def queue_record_outcomes(
    pipe: aioredis.client.Pipeline,
    keys: HandlerKeys,
    params: BreakerParams,
    outcomes: Sequence[int],
    now_ms: int | None = None,
    *,
    lease: str | None = None,
) -> None:
    """:func:`record_outcomes`, added to ``pipe`` (the batch's XACK pipeline) without awaiting.

    Its reply, at its place in ``await pipe.execute()``, parses with
    :func:`parse_record_result`. It is a bare EVALSHA: the caller loads the scripts first
    (``queues.scripts.load_all``) and again if the reply is NOSCRIPT.
    """
    _RECORD.queue(pipe, _keys(keys), _record_args(params, outcomes, now_ms, lease))


def queue_record_codes(pipe: aioredis.client.Pipeline, breaker_key: bytes,
                       wire_args: tuple[bytes, ...], codes: bytes, lease: str | None,
                       log_key: bytes | None = None) -> None:
    """:func:`queue_record_outcomes` for the hot path: every argument already encoded
    (``BreakerParams.wire_args``, :func:`encode_outcomes`), the clock the server's. The
    script rejects a code that is not a digit 0-4, so nothing is lost by not checking here.
    ``log_key`` is ``HandlerKeys.breaker_log`` encoded; found from ``breaker_key`` when
    not given.
    """
    _RECORD.queue(pipe, [breaker_key, log_key or _log_key_of(breaker_key)],
                  [b"", *wire_args, lease.encode() if lease else b"", codes])


async def release(client: aioredis.Redis, keys: HandlerKeys, params: BreakerParams,
                  lease: str, now_ms: int | None = None) -> RecordResult:
    """Give a probe lease back unused (the probe read nothing)."""
    return await record_outcomes(client, keys, params, (), now_ms, lease=lease)


async def renew_lease(client: aioredis.Redis, keys: HandlerKeys, lease: str, *,
                      lease_ttl_ms: int, now_ms: int | None = None) -> bool:
    """Keep a live half-open lease for ``lease_ttl_ms`` more (its probes still run);
    False when it is gone: expired, released, or the breaker left half-open."""
    if lease_ttl_ms < 1:
        raise ValueError("lease_ttl_ms must be >= 1")
    reply = await _RENEW(client, [keys.breaker], [_now_arg(now_ms), lease, int(lease_ttl_ms)])
    return bool(int(reply))


def _parse_grant(reply: Any) -> Grant:
    state, may_read, permits, open_until, lease, retry_in = reply
    permits = int(permits)
    retry_in = int(retry_in)
    return Grant(
        state=_s(state),
        may_read=bool(int(may_read)),
        permits=None if permits < 0 else permits,
        lease=_s(lease) or None,
        open_until_ms=_ms_or_none(open_until),
        retry_in_ms=None if retry_in < 0 else retry_in,
    )


async def acquire(
    client: aioredis.Redis,
    keys: HandlerKeys,
    params: BreakerParams,
    now_ms: int | None = None,
    *,
    lease_ttl_ms: int,
    want: int | None = None,
) -> Grant:
    """May this consumer read now, and how many messages? Call before each read.

    In half-open at most ``params.half_open_calls`` permits are out fleet-wide, each in a
    lease that expires after ``lease_ttl_ms`` unless renewed (:func:`renew_lease`), so a
    prober killed mid-probe cannot leave the breaker stuck: the next acquire reclaims it.
    ``want`` caps this caller's share (e.g. its free concurrency); ``None`` takes all free.
    """
    if lease_ttl_ms < 1:
        raise ValueError("lease_ttl_ms must be >= 1")
    if want is not None and want < 1:
        raise ValueError("want must be >= 1 (or None for as many as are free)")
    args = [_now_arg(now_ms), *params.args(), int(lease_ttl_ms), "" if want is None else want]
    return _parse_grant(await _ACQUIRE(client, _keys(keys), args))


# -- reading -----------------------------------------------------------------------------


def parse_snapshot(raw: Mapping[Any, Any]) -> BreakerSnapshot:
    """The breaker hash (HGETALL reply) as a :class:`BreakerSnapshot`; empty = new and closed."""
    fields = {_s(k): _s(v) for k, v in raw.items()}
    leases = []
    for name, value in fields.items():
        if name.startswith(_LEASE):
            permits, _, expires = value.partition(":")
            leases.append(LeaseInfo(name[len(_LEASE):], int(permits), int(expires)))
    leases.sort(key=lambda lease: int(lease.id) if lease.id.isdigit() else 0)
    return BreakerSnapshot(
        state=fields.get("state") or CLOSED,
        window=tuple(int(c) for c in fields.get("window", "")),
        opened_at_ms=int(fields["opened_at"]) if fields.get("opened_at") else None,
        open_until_ms=int(fields["open_until"]) if fields.get("open_until") else None,
        probe_calls=int(fields.get("probe_calls") or 0),
        probe_slow=int(fields.get("probe_slow") or 0),
        leases=tuple(leases),
        lease_seq=int(fields.get("lease_seq") or 0),
    )


async def read_state(client: aioredis.Redis, keys: HandlerKeys) -> BreakerSnapshot:
    return parse_snapshot(await client.hgetall(keys.breaker))


def read_state_sync(client: redis.Redis, keys: HandlerKeys) -> BreakerSnapshot:
    return parse_snapshot(client.hgetall(keys.breaker))


@dataclass(frozen=True, slots=True)
class Transition:
    """One entry of the breaker's log."""

    entry_id: str
    from_state: str
    to_state: str
    reason: str
    """A code (a key of :data:`REASONS`)."""
    at_ms: int
    """When, by the clock the script ran with (the Redis server's in production)."""

    @property
    def reason_text(self) -> str:
        return REASONS.get(self.reason, self.reason)


def parse_transitions(rows: Any) -> list[Transition]:
    """XRANGE rows of a breaker log as :class:`Transition` s."""
    out = []
    for raw_id, raw_fields in rows:
        fields = {_s(k): _s(v) for k, v in raw_fields.items()}
        out.append(Transition(_s(raw_id), fields.get("from", "?"), fields.get("to", "?"),
                              fields.get("reason", "?"), int(fields.get("at") or 0)))
    return out


def _since(since_ms: int | None) -> str:
    return "-" if since_ms is None else str(max(0, int(since_ms)))


def read_transitions_sync(client: redis.Redis, keys: HandlerKeys, *,
                          since_ms: int | None = None) -> list[Transition]:
    """The transitions still in the log (the last 100 or so), oldest first; with
    ``since_ms``, those logged at or after that time of the Redis server's clock."""
    return parse_transitions(client.xrange(keys.breaker_log, _since(since_ms), "+"))


async def read_transitions(client: aioredis.Redis, keys: HandlerKeys, *,
                           since_ms: int | None = None) -> list[Transition]:
    return parse_transitions(await client.xrange(keys.breaker_log, _since(since_ms), "+"))


# -- operators ---------------------------------------------------------------------------


def _admin_args(op: str, now_ms: int | None, duration_ms: int | None = None) -> list[Any]:
    if duration_ms is not None and duration_ms < 1:
        raise ValueError("a forced-open duration must be at least 1 ms")
    return [op, _now_arg(now_ms), "" if duration_ms is None else int(duration_ms)]


def _parse_admin(reply: Any) -> AdminResult:
    state, open_until = reply
    return AdminResult(_s(state), _ms_or_none(open_until))


async def force_open(client: aioredis.Redis, keys: HandlerKeys, *,
                     duration_ms: int | None = None, now_ms: int | None = None) -> AdminResult:
    """Open the breaker whatever its rates say; half-open after ``duration_ms``, or never
    (until :func:`force_close` or :func:`reset`) when it is ``None``."""
    args = _admin_args("force_open", now_ms, duration_ms)
    return _parse_admin(await _ADMIN(client, _keys(keys), args))


async def force_close(client: aioredis.Redis, keys: HandlerKeys, *,
                      now_ms: int | None = None) -> AdminResult:
    """Close the breaker with an empty window."""
    return _parse_admin(await _ADMIN(client, _keys(keys), _admin_args("close", now_ms)))


async def reset(client: aioredis.Redis, keys: HandlerKeys, *,
                now_ms: int | None = None) -> AdminResult:
    """Forget the breaker's state and history: closed, as new."""
    return _parse_admin(await _ADMIN(client, _keys(keys), _admin_args("reset", now_ms)))


async def disable(client: aioredis.Redis, keys: HandlerKeys, *,
                  now_ms: int | None = None) -> AdminResult:
    """Let consumers read whatever happens, recording nothing, until closed or reset."""
    return _parse_admin(await _ADMIN(client, _keys(keys), _admin_args("disable", now_ms)))


def force_open_sync(client: redis.Redis, keys: HandlerKeys, *,
                    duration_ms: int | None = None, now_ms: int | None = None) -> AdminResult:
    args = _admin_args("force_open", now_ms, duration_ms)
    return _parse_admin(_ADMIN.call_sync(client, _keys(keys), args))


def force_close_sync(client: redis.Redis, keys: HandlerKeys, *,
                     now_ms: int | None = None) -> AdminResult:
    return _parse_admin(_ADMIN.call_sync(client, _keys(keys), _admin_args("close", now_ms)))


def reset_sync(client: redis.Redis, keys: HandlerKeys, *,
               now_ms: int | None = None) -> AdminResult:
    return _parse_admin(_ADMIN.call_sync(client, _keys(keys), _admin_args("reset", now_ms)))


def disable_sync(client: redis.Redis, keys: HandlerKeys, *,
                 now_ms: int | None = None) -> AdminResult:
    return _parse_admin(_ADMIN.call_sync(client, _keys(keys), _admin_args("disable", now_ms)))
