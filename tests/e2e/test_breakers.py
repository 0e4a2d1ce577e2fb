"""Circuit breakers, end to end: two processes of one pool (``seawall run``) share each
handler's breaker in Redis. The handler calls a "dependency" simulated with Redis keys: the
test makes it fail, hang, be slow or recover, and every call is counted and logged with the
state the fleet's breaker was in at that moment (``breaker_helpers.APP``).

Open means stop reading: the dependency gets no calls, messages wait in the stream (lag
grows), nothing is dead-lettered because the dependency is down; after ``open_for`` exactly
``half_open_calls`` probes run, fleet-wide; every message is handled in the end.

The pools read batches of half their concurrency (``write_breaker_app``); the last three
tests pin bugs found while building breakers: a fetch deadlock when a batch larger than the
pool's free slots meets a backlog after the breaker closes, more probes than
``half_open_calls`` when probes finish at different times, and a restarted process calling
through an open breaker with the messages it took back from a dead one."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict

import pytest

from e2e.breaker_helpers import (
    POOL,
    Dependency,
    Publisher,
    breaker,
    breaker_list,
    cli,
    dead_letters,
    lag,
    leases,
    restarted,
    server_ms,
    settled,
    state,
    status_breaker,
    wait_breaker,
    write_breaker_app,
)
from e2e.support import E2E, wait_until
from workers.runtime.gate import PROBE_LEASE_TTL

pytestmark = pytest.mark.slow

NOTHING_LEFT = {"pending": 0, "lag": 0, "delayed": 0, "dlq": 0, "retry": 0}


def all_handled_nothing_left(e2e: E2E, dep: Dependency, published: list[str], stream: str,
                             handler: str) -> None:
    """Wait until the handler completed every published message and nothing of it is left
    pending, unread, delayed or dead-lettered."""
    wait_until(lambda: set(dep.recorded("handled")) == set(published), timeout=15,
               interval=0.1, what="every message handled", details=e2e.all_logs)
    wait_until(lambda: settled(e2e.client, stream, handler) == NOTHING_LEFT, timeout=10,
               what="nothing pending, delayed or dead", details=lambda: str(
                   settled(e2e.client, stream, handler)))


def start_pool(e2e: E2E, app_path: str) -> tuple[int, int]:
    """``seawall run`` with pool ``p``'s two processes; returns their pids once both beat."""
    e2e.run(app_path)
    return e2e.wait_pool_ready(POOL, 0), e2e.wait_pool_ready(POOL, 1)


def test_a_failing_dependency_opens_the_breaker_fleet_wide_and_nothing_is_lost(
    e2e: E2E,
) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("charge")
    app_path = write_breaker_app(
        e2e, stream, handler,
        breaker="window=10, min_calls=5, failure_rate=0.5, open_for=3, half_open_calls=1")
    dep = Dependency(e2e)
    client = e2e.client
    published: list[str] = []

    def hash_() -> dict[str, str]:
        return breaker(client, stream, handler)

    # Given two processes of one pool handling messages while the dependency works,
    start_pool(e2e, app_path)
    published += e2e.app.publish_many(stream, ({"n": n} for n in range(10)))
    wait_until(lambda: len(dep.recorded("handled")) == 10, timeout=10,
               what="the first messages", details=e2e.all_logs)
    # (recorded by the ack pipeline, just after the handlers returned)
    wait_until(lambda: hash_().get("state") == "closed", timeout=5, what="closed recorded")

    # when the dependency goes down with messages flowing,
    dep.set("down")
    published += e2e.app.publish_many(stream, ({"n": n} for n in range(10, 50)))

    # then the breaker opens, for every process (one hash in Redis),
    opened = wait_breaker(e2e, stream, handler, lambda h: h.get("state") == "open",
                          timeout=10, what="the breaker to open")
    opened_at, open_until = int(opened["opened_at"]), int(opened["open_until"])
    assert open_until - opened_at == 3000
    window = opened["window"]
    assert len(window) >= 5 and window.count("1") / len(window) >= 0.5, window

    # and, once the calls already running have ended, the dependency gets no calls at all
    # while messages keep arriving: they wait in the stream, and its lag grows.
    wait_until(lambda: server_ms(client) >= opened_at + 700, timeout=2)
    calls, lag_before = dep.calls(), lag(client, stream, handler)
    published += e2e.app.publish_many(stream, ({"n": n} for n in range(50, 80)))
    wait_until(lambda: server_ms(client) >= opened_at + 2500, timeout=3)
    assert dep.calls() == calls, "the dependency was called while the breaker was open"
    assert hash_()["state"] == "open"
    assert lag(client, stream, handler) >= lag_before + 30
    assert settled(client, stream, handler)["dlq"] == 0

    # After open_for, exactly one probe (half_open_calls=1) runs, in either process; it
    # fails, so the breaker opens again at once.
    reopened = wait_breaker(e2e, stream, handler,
                            lambda h: h.get("opened_at") not in (None, str(opened_at)),
                            timeout=6, what="the breaker to reopen")
    assert reopened["state"] == "open"
    second_open = int(reopened["opened_at"])
    assert second_open >= open_until
    wait_until(lambda: server_ms(client) >= second_open + 700, timeout=2)
    assert dep.calls() == calls + 1, "half-open must let exactly one probe through"
    assert [c.breaker for c in dep.call_log()[calls:]] == ["half_open"]

    # When the dependency recovers, the next probe succeeds and the breaker closes:
    dep.clear("down")
    dep.set("slow", "0.4")  # the probe takes a while: watch half-open with one call in it
    seen: list[tuple[int, str]] = []

    def closed() -> bool:
        seen.append(dep.calls_and_state(stream, handler))
        return seen[-1][1] == "closed"

    wait_until(closed, timeout=8, interval=0.01, what="the breaker to close",
               details=e2e.all_logs)
    dep.clear("slow")
    during_half_open = {n for n, s in seen if s == "half_open"}
    # While it was half-open the dependency had its one probe (calls + 2), no more; the
    # count before the probe's call started is the previous period's (calls + 1).
    assert calls + 2 in during_half_open, seen
    assert during_half_open <= {calls + 1, calls + 2}, seen
    # every message is then handled, exactly once, and nothing is left anywhere.
    wait_until(lambda: set(dep.recorded("handled")) == set(published), timeout=20,
               interval=0.1, what="every message handled", details=lambda: (
                   f"{settled(client, stream, handler)} {hash_()} "
                   f"missing {len(set(published) - set(dep.recorded('handled')))}"))
    wait_until(lambda: settled(client, stream, handler) == NOTHING_LEFT, timeout=10,
               what="nothing pending, delayed or dead", details=lambda: str(
                   settled(client, stream, handler)))
    assert set(dep.recorded("handled").values()) == {1}
    log = dep.call_log()
    # While open nobody called; each half-open period had exactly its one probe; the only
    # calls the fleet made knowing the breaker open were stragglers started just before.
    assert [c.breaker for c in log].count("half_open") == 2
    late = [c for c in log if c.breaker == "open" and c.at * 1000 > opened_at + 700]
    assert late == [], late
    # Parking messages read while the breaker was open used up none of their attempts:
    # each message's attempts are 1, 2, 3... in the order it was called.
    attempts: dict[str, list[int]] = defaultdict(list)
    for c in log:
        attempts[c.message_id].append(c.attempt)
    for mid, seq in attempts.items():
        assert seq == list(range(1, len(seq) + 1)), (mid, seq)


def test_slow_calls_alone_open_the_breaker(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("quote")
    app_path = write_breaker_app(
        e2e, stream, handler,
        breaker="window=6, min_calls=4, slow_call=0.15, slow_call_rate=0.5, open_for=1.5")
    dep = Dependency(e2e)
    client = e2e.client

    # Given a dependency that answers, but slowly (0.3 s a call, slow_call=0.15 s),
    start_pool(e2e, app_path)
    dep.set("slow", "0.3")
    # when messages arrive,
    published = e2e.app.publish_many(stream, ({"n": n} for n in range(30)))

    # then the slow calls alone open the breaker: its window holds slow successes
    # (code 2) and plain successes (code 0) only, no failure,
    opened = wait_breaker(e2e, stream, handler, lambda h: h.get("state") == "open",
                          timeout=10, what="the breaker to open")
    window = opened["window"]
    assert set(window) <= {"0", "2"} and window.count("2") / len(window) >= 0.5, window
    assert len(window) >= 4
    opened_at = int(opened["opened_at"])
    dep.clear("slow")
    assert lag(client, stream, handler) > 0, "messages wait in the stream"

    # and once the probe after open_for is fast again it closes; every message is handled
    # once, and none was retried or dead-lettered: every call was a first attempt.
    wait_until(lambda: state(client, stream, handler) == "closed", timeout=8,
               what="the breaker to close", details=e2e.all_logs)
    all_handled_nothing_left(e2e, dep, published, stream, handler)
    assert set(dep.recorded("handled").values()) == {1}
    log = dep.call_log()
    assert {c.attempt for c in log} == {1}
    assert [c.breaker for c in log].count("half_open") == 1
    late = [c for c in log if c.breaker == "open" and c.at * 1000 > opened_at + 700]
    assert late == [], late


def test_a_prober_killed_in_half_open_does_not_leave_the_breaker_stuck(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("ship")
    timeout = 60.0  # far longer than a probe lease lives between renewals
    app_path = write_breaker_app(
        e2e, stream, handler, timeout=timeout,
        breaker="window=4, min_calls=2, failure_rate=0.5, open_for=1.5, half_open_calls=1")
    dep = Dependency(e2e)
    client = e2e.client

    # Given a breaker opened by a failing dependency,
    run = e2e.run(app_path)
    pids = {e2e.wait_pool_ready(POOL, 0), e2e.wait_pool_ready(POOL, 1)}
    dep.set("down")
    published = e2e.app.publish_many(stream, ({"n": n} for n in range(20)))
    wait_until(lambda: state(client, stream, handler) == "open", timeout=10,
               what="the breaker to open", details=e2e.all_logs)
    # and a dependency that now hangs,
    dep.set("hang")
    dep.clear("down")

    # when the half-open probe hangs and its process is SIGKILLed holding the lease,
    [probe] = wait_until(lambda: [c for c in dep.call_log() if c.breaker == "half_open"],
                         timeout=5, interval=0.01, what="the probe", details=e2e.all_logs)
    assert probe.pid in pids
    snapshot = breaker(client, stream, handler)
    [(permits, expires_ms)] = leases(snapshot).values()
    assert snapshot["state"] == "half_open" and permits == 1
    # (a lease lives PROBE_LEASE_TTL between renewals, not the handler's timeout)
    assert (PROBE_LEASE_TTL - 1) * 1000 <= expires_ms - probe.at * 1000 <= (
        PROBE_LEASE_TTL + 1) * 1000
    os.kill(probe.pid, signal.SIGKILL)
    dep.clear("hang")

    # then the breaker waits for the dead lease to expire (no other probe meanwhile: it
    # stays half-open), then a live process probes and it closes;
    seen: list[tuple[int, str]] = []

    def closed() -> bool:
        seen.append((server_ms(client), state(client, stream, handler)))
        return seen[-1][1] == "closed"

    wait_until(closed, timeout=PROBE_LEASE_TTL + 15, interval=0.02,
               what="the breaker to close", details=e2e.all_logs)
    assert {s for at, s in seen if at < expires_ms - 50} == {"half_open"}, seen
    assert seen[-1][0] >= expires_ms
    later = [c for c in dep.call_log() if c.breaker == "half_open" and c.at * 1000 >= expires_ms]
    assert len(later) == 1 and later[0].pid != probe.pid, later
    # meanwhile the supervisor replaced the killed process;
    kids = run.children()
    assert len(kids) == 2 and probe.pid not in kids and later[0].pid in kids

    # and every message is handled, none lost, nothing left pending, delayed or dead.
    all_handled_nothing_left(e2e, dep, published, stream, handler)


def test_a_probe_running_longer_than_its_lease_keeps_it_and_no_second_probe_starts(
        e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("audit")
    probe_seconds = PROBE_LEASE_TTL + 2
    app_path = write_breaker_app(
        e2e, stream, handler, timeout=probe_seconds + 10,
        breaker="window=4, min_calls=2, failure_rate=0.5, open_for=1, half_open_calls=1")
    dep = Dependency(e2e)
    client = e2e.client

    # Given a breaker opened by a failing dependency, which then recovers but answers its
    # next call only after longer than a probe lease lives without renewal,
    start_pool(e2e, app_path)
    dep.set("down")
    published = e2e.app.publish_many(stream, ({"n": n} for n in range(12)))
    wait_until(lambda: state(client, stream, handler) == "open", timeout=10,
               what="the breaker to open", details=e2e.all_logs)
    dep.clear("down")
    dep.set("slow", str(probe_seconds))
    # when the half-open probe starts,
    [probe] = wait_until(lambda: [c for c in dep.call_log() if c.breaker == "half_open"],
                         timeout=5, interval=0.01, what="the probe", details=e2e.all_logs)
    dep.clear("slow")  # (later calls are quick: only the probe read the slow setting)

    # then its process renews the lease while it runs: the lease never lapses, and no
    # other probe starts in either process until the long one has finished,
    expiries = []
    deadline = time.monotonic() + probe_seconds + 10
    while state(client, stream, handler) == "half_open":
        assert time.monotonic() < deadline, "the breaker stayed half-open"
        now = server_ms(client)
        held = leases(breaker(client, stream, handler))
        assert len(held) <= 1, held
        expiries += [(now, expires) for _, expires in held.values()]
        time.sleep(0.1)
    assert expiries and all(expires > now for now, expires in expiries), expiries
    assert expiries[-1][0] - probe.at * 1000 >= PROBE_LEASE_TTL * 1000, "lease outlived ttl"
    probes = [c for c in dep.call_log() if c.breaker == "half_open"]
    assert probes == [probe], probes
    # and when it succeeds the breaker closes and every message is handled, once.
    assert state(client, stream, handler) == "closed"
    all_handled_nothing_left(e2e, dep, published, stream, handler)
    assert set(dep.recorded("handled").values()) == {1}


def test_excluded_and_validation_errors_never_open_the_breaker(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("reserve")
    app_path = write_breaker_app(
        e2e, stream, handler, stop="stop_after_attempt(2)", wait="wait_fixed(0.1)",
        breaker="window=10, min_calls=5, failure_rate=0.5, open_for=30, "
                "exclude=(BusinessError,)")
    dep = Dependency(e2e)
    client = e2e.client

    # Given a breaker that would open at 5 failures in 10 calls,
    start_pool(e2e, app_path)
    # when far more business errors (excluded), invalid payloads and NonRetryable errors
    # arrive than that, with a few good messages among them,
    kinds: list[str] = []
    payloads: list[dict[str, object]] = []
    for i in range(20):
        batch: list[tuple[str, dict[str, object]]] = [
            ("business", {"n": i, "kind": "business"}), ("invalid", {"n": f"x{i}"})]
        if i < 10:
            batch.append(("fatal", {"n": i, "kind": "fatal"}))
        if i < 6:
            batch.append(("ok", {"n": i}))
        for kind, payload in batch:
            kinds.append(kind)
            payloads.append(payload)
    ids = e2e.app.publish_many(stream, payloads)
    by_kind: dict[str, set[str]] = defaultdict(set)
    for kind, mid in zip(kinds, ids, strict=True):
        by_kind[kind].add(mid)

    # then the breaker never leaves "closed" while they are handled,
    states: set[str] = set()

    def done() -> bool:
        states.add(state(client, stream, handler))
        return settled(client, stream, handler) == {**NOTHING_LEFT, "dlq": 50}

    wait_until(done, timeout=20, interval=0.02, what="every message settled",
               details=lambda: str(settled(client, stream, handler)))
    assert states == {"closed"}
    # and its window holds the six good calls only: the others never counted.
    assert breaker(client, stream, handler)["window"] == "000000"
    assert dep.calls() == 6 and set(dep.recorded("handled")) == by_kind["ok"]
    # Each kind followed its own path: the business errors the retry policy (tried twice,
    # then dead-lettered), the invalid and NonRetryable ones straight to the dead letters.
    assert dep.recorded("business") == dict.fromkeys(by_kind["business"], 2)
    letters = {d["id"]: d for d in dead_letters(client, stream, handler)}
    assert set(letters) == by_kind["business"] | by_kind["invalid"] | by_kind["fatal"]
    expected = {"business": ("BusinessError", "2", "attempts exhausted: 2 attempts"),
                "invalid": ("ValidationError", "1", "invalid payload: validation failed"),
                "fatal": ("NonRetryable", "1", "non-retryable: NonRetryable")}
    for kind, (error_type, attempts, reason) in expected.items():
        for mid in by_kind[kind]:
            letter = letters[mid]
            assert (letter["dlq_error_type"], letter["dlq_attempts"]) == (error_type, attempts)
            assert letter["dlq_reason"].startswith(reason), letter["dlq_reason"]


def test_while_open_the_fallback_handles_and_acks_every_message(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("notify")
    app_path = write_breaker_app(e2e, stream, handler, breaker="", fallback=True)
    dep = Dependency(e2e)
    client = e2e.client

    # Given a handler with a fallback, whose breaker an operator forces open for 30 s,
    pids = set(start_pool(e2e, app_path))
    cli(e2e, "breaker", "open", handler, "--for", "30")
    row = breaker_list(e2e, handler)
    assert row["state"] == "forced_open" and 25 < row["half_open_in"] <= 30, row
    # (a process that heard "closed" less than a second ago may read one more batch:
    # trickle messages until both processes have used the fallback)
    published: list[str] = []

    def both_degraded() -> bool:
        published.extend(e2e.app.publish_many(stream, [{"n": len(published)}]))
        members = client.smembers(e2e.key("fallback-pids"))
        return {int(p) for p in members} == pids

    wait_until(both_degraded, timeout=10, interval=0.05, what="both processes to degrade",
               details=e2e.all_logs)
    calls = dep.calls()

    # when more messages arrive,
    later = e2e.app.publish_many(stream, ({"n": n} for n in range(1000, 1040)))
    published += later

    # then every one of them goes to the fallback, is acked, and the dependency gets no call;
    wait_until(lambda: set(later) <= set(dep.recorded("fallback")), timeout=10,
               what="the fallback to run", details=e2e.all_logs)
    wait_until(lambda: settled(client, stream, handler) == NOTHING_LEFT, timeout=10,
               what="the acks", details=lambda: str(settled(client, stream, handler)))
    assert dep.calls() == calls
    # every message was handled once, by the handler (before the processes heard of the
    # open breaker) or by the fallback, never both; none delayed, none dead-lettered.
    handled, degraded = dep.recorded("handled"), dep.recorded("fallback")
    assert not set(handled) & set(degraded)
    assert set(handled) | set(degraded) == set(published)
    assert set(handled.values()) | set(degraded.values()) == {1}
    assert state(client, stream, handler) == "forced_open"


def test_operators_open_and_close_a_running_fleet_within_a_batch(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("bill")
    concurrency = 4
    app_path = write_breaker_app(e2e, stream, handler, breaker="open_for=1",
                                 concurrency=concurrency)
    dep = Dependency(e2e)
    client = e2e.client

    # Given messages flowing steadily (50 a second) through two processes,
    start_pool(e2e, app_path)
    with Publisher(e2e, stream) as publisher:
        wait_until(lambda: dep.calls() >= 20, timeout=10, what="messages flowing",
                   details=e2e.all_logs)

        # when an operator forces the breaker open,
        cli(e2e, "breaker", "open", handler)
        opened = time.time()
        assert status_breaker(e2e, handler) == "forced_open"
        row = breaker_list(e2e, handler)
        assert row["state"] == "forced_open" and row["half_open_in"] is None

        # then within a second the dependency gets no more calls (each process reads at
        # most one more batch), while messages pile up in the stream,
        wait_until(lambda: time.time() >= opened + 1.0, timeout=2)
        calls, lag_before, sent = dep.calls(), lag(client, stream, handler), len(publisher.ids)
        # (on a loaded machine the publisher's thread may stall: wait for ten more)
        wait_until(lambda: time.time() >= opened + 2.0 and len(publisher.ids) - sent >= 10,
                   timeout=15, what="ten more messages published")
        assert dep.calls() == calls
        lag_after, sent_after = lag(client, stream, handler), len(publisher.ids)
        assert abs((lag_after - lag_before) - (sent_after - sent)) <= 2, "none was read"
        stragglers = [c for c in dep.call_log() if c.breaker == "forced_open"]
        assert len(stragglers) <= 2 * concurrency, stragglers
        assert all(c.at < opened + 1.0 for c in stragglers), stragglers

        # and when the operator closes it, handling resumes at once.
        cli(e2e, "breaker", "close", handler)
        closed = time.time()
        # (the call log, which the handler writes after counting the call)
        wait_until(lambda: len(dep.call_log()) > calls, timeout=3, what="handling to resume",
                   details=e2e.all_logs)
        assert min(c.at for c in dep.call_log()[calls:]) < closed + 1.5
        assert status_breaker(e2e, handler) == "closed"

    # Every message is handled once, nothing left pending, delayed or dead.
    published = publisher.ids
    all_handled_nothing_left(e2e, dep, published, stream, handler)
    assert set(dep.recorded("handled").values()) == {1}


# -- regressions ------------------------------------------------------------------------


def test_after_the_breaker_closes_a_backlog_and_retries_drain(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("pack")
    # The pool's default batch_size (100) is above its concurrency (4).
    app_path = write_breaker_app(
        e2e, stream, handler, batch_size=100,
        breaker="window=4, min_calls=2, failure_rate=0.5, open_for=1")
    dep = Dependency(e2e)
    client = e2e.client

    # Given a breaker opened by a failing dependency, with a backlog in the stream and
    # retries (and parked messages) waiting in the handler's retry stream,
    start_pool(e2e, app_path)
    dep.set("down")
    published = e2e.app.publish_many(stream, ({"n": n} for n in range(40)))
    wait_until(lambda: state(client, stream, handler) == "open", timeout=10,
               what="the breaker to open", details=e2e.all_logs)
    # when the dependency recovers and the breaker closes,
    dep.clear("down")
    wait_until(lambda: state(client, stream, handler) == "closed", timeout=8,
               what="the breaker to close", details=e2e.all_logs)
    # then every message is handled.
    wait_until(lambda: set(dep.recorded("handled")) == set(published), timeout=6,
               interval=0.1, what="every message handled", details=lambda: str(
                   settled(client, stream, handler)))


def test_half_open_lets_exactly_half_open_calls_probes_through(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("price")
    app_path = write_breaker_app(
        e2e, stream, handler,
        breaker="window=4, min_calls=2, failure_rate=0.5, open_for=1.5, half_open_calls=2")
    dep = Dependency(e2e)
    client = e2e.client

    # Given a breaker opened by a failing dependency, which then recovers, but whose
    # answers take unequal times (odd calls 0.5 s longer),
    start_pool(e2e, app_path)
    dep.set("down")
    e2e.app.publish_many(stream, ({"n": n} for n in range(30)))
    wait_until(lambda: state(client, stream, handler) == "open", timeout=10,
               what="the breaker to open", details=e2e.all_logs)
    dep.clear("down")
    dep.set("stagger", "0.5")
    # when the breaker turns half-open and its probes succeed,
    wait_until(lambda: state(client, stream, handler) == "closed", timeout=10,
               what="the breaker to close", details=e2e.all_logs)
    # then exactly half_open_calls (2) probes ran before it closed.
    probes = [c for c in dep.call_log() if c.breaker == "half_open"]
    assert len(probes) == 2, probes


def test_a_restarted_process_does_not_call_through_an_open_breaker(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("deliver")
    app_path = write_breaker_app(e2e, stream, handler, breaker="open_for=2")
    dep = Dependency(e2e)
    client = e2e.client

    # Given calls hanging in both processes,
    run = e2e.run(app_path)
    pids = {e2e.wait_pool_ready(POOL, 0), e2e.wait_pool_ready(POOL, 1)}
    dep.set("hang")
    published = e2e.app.publish_many(stream, ({"n": n} for n in range(4)))
    wait_until(lambda: {c.pid for c in dep.call_log()} == pids, timeout=10,
               what="calls hanging in both processes", details=e2e.all_logs)
    # when an operator forces the breaker open and one process is SIGKILLed,
    cli(e2e, "breaker", "open", handler)
    victim = dep.call_log()[0].pid
    held = {c.message_id for c in dep.call_log() if c.pid == victim}
    os.kill(victim, signal.SIGKILL)
    dep.clear("hang")
    fresh = restarted(run, pids)
    # then the restarted process takes the dead one's messages back without calling the
    # dependency: the breaker is open; they wait, parked, until it closes.
    wait_until(lambda: int(client.zcard(f"seawall:{{{stream}}}:delayed:{handler}"))
               == len(held), timeout=3, what="the messages parked",
               details=lambda: str(dep.call_log()))
    assert [c for c in dep.call_log() if c.pid == fresh] == []
    cli(e2e, "breaker", "close", handler)
    wait_until(lambda: set(dep.recorded("handled")) == set(published), timeout=10,
               interval=0.1, what="every message handled", details=e2e.all_logs)

