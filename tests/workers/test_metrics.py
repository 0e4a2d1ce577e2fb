"""Metrics, pure: what a pool process counts per message (``MessageMetrics``), the report
it sends (``wire``), the supervisor's totals across restarts (``Totals``), the health
decisions (``health``) and the Prometheus text they become (``exporter``). No Redis, no
process, no clock: times are plain numbers."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from queues.envelope import Envelope
from queues.keys import HandlerKeys
from workers.breaker import CircuitBreaker
from workers.errors import NonRetryable
from workers.middleware import Call
from workers.observability import health
from workers.observability.counting import BUCKETS, SLOTS, SUM, MessageMetrics
from workers.observability.exporter import Snapshot, SnapshotCollector, families
from workers.observability.fleet import FleetFigures, HandlerFigures, saga_names
from workers.observability.totals import HandlerLabels, SlotView, Totals
from workers.observability.wire import Report, WireError, decode, encode
from workers.outcome import Outcome
from workers.runtime.gate import BreakerGate


def call(handler: str = "billing.charge", duration: float = 0.0) -> Call:
    c = Call(handler, "payments", "orders", Envelope("orders", "1-0", {}), 0.0)
    c.duration = duration
    return c


class Flaky(Exception):
    pass


# -- counting in the pool process ------------------------------------------------------------

def test_each_settled_message_is_counted_by_handler_and_kind() -> None:
    metrics = MessageMetrics()
    for _ in range(3):
        metrics(call(duration=0.001), Outcome.ok())
    metrics(call(duration=0.002), Outcome.retry(Flaky("x"), 0))
    metrics(call(duration=0.003), Outcome.dead_letter(NonRetryable("no"), "gave up"))
    metrics(call(), Outcome.parked(0))
    metrics(call("other"), Outcome.skipped())

    deltas = metrics.take_deltas()

    assert deltas.processed == {("billing.charge", "ok"): 3, ("billing.charge", "retry"): 1,
                                ("billing.charge", "dead_letter"): 1,
                                ("billing.charge", "parked"): 1, ("other", "skipped"): 1}
    assert deltas.exceptions == {("billing.charge", "Flaky"): 1,
                                 ("billing.charge", "NonRetryable"): 1}


def test_only_messages_whose_handler_ran_have_a_duration() -> None:
    metrics = MessageMetrics()
    metrics(call(duration=0.0004), Outcome.ok())
    metrics(call(), Outcome.parked(0))        # the breaker was open: nothing ran
    metrics(call(), Outcome.skipped())        # already done: nothing ran

    counts = metrics.take_deltas().durations["billing.charge"]

    assert sum(counts[:SUM]) == 1
    assert counts[SUM] == pytest.approx(0.0004)


@pytest.mark.parametrize(("duration", "bucket"), [
    (0.00005, 0),               # below the first bound
    (0.0001, 0),                # on a bound: le is inclusive
    (0.00010001, 1),
    (0.0009, 3),                # sub-millisecond buckets: 0.1, 0.25, 0.5, 1 ms
    (60.0, len(BUCKETS) - 1),
    (61.0, len(BUCKETS)),       # +Inf
])
def test_a_duration_falls_in_the_first_bucket_whose_bound_it_does_not_pass(
        duration: float, bucket: int) -> None:
    metrics = MessageMetrics()
    metrics(call(duration=duration), Outcome.ok())

    counts = metrics.take_deltas().durations["billing.charge"]

    assert len(counts) == SLOTS + 1
    assert [i for i, n in enumerate(counts[:SUM]) if n] == [bucket]


def test_the_buckets_start_below_a_millisecond_and_are_sorted() -> None:
    assert list(BUCKETS) == sorted(set(BUCKETS))
    assert len([b for b in BUCKETS if b < 0.001]) >= 3


def test_taking_starts_the_counting_afresh() -> None:
    metrics = MessageMetrics()
    metrics(call(duration=0.001), Outcome.ok())
    first = metrics.take_deltas()
    second = metrics.take_deltas()
    metrics(call(duration=0.001), Outcome.ok())

    assert first and not second
    assert metrics.take_deltas().processed == {("billing.charge", "ok"): 1}


def test_it_is_the_pools_outcome_counter_too() -> None:
    """One observer call per message: the outcome counts for Redis (``seawall status``)
    are counted by the same call, and taken apart from the report's."""
    metrics = MessageMetrics()
    metrics(call(duration=0.001), Outcome.ok())
    metrics(call(duration=0.001), Outcome.retry(Flaky("x"), 0))

    assert metrics.take() == {("billing.charge", "ok"): 1, ("billing.charge", "retry"): 1}
    assert metrics.take_deltas().processed == {("billing.charge", "ok"): 1,
                                               ("billing.charge", "retry"): 1}
    assert not metrics.take() and not metrics.take_deltas()


# -- the report on the pipe ---------------------------------------------------------------

def test_a_report_survives_the_pipe() -> None:
    report = Report(pid=42, lag=0.0123, read_age=0.5, saturated=True, in_flight=3,
                    capacity=8, processed=[("h", "orders", "ok", 5)],
                    durations={"h": [1.0] * SLOTS + [0.25]},
                    exceptions=[("h", "Flaky", 2)], breakers={"h": "open"},
                    transitions=[("h", "closed", "open", 1)], reconnects=3, final=True)

    line = encode(report)

    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == report


@pytest.mark.parametrize("line", [
    b"not json", b"[1, 2]", b"{}", b'{"pid": -1}', b'{"pid": 1, "lag": "slow"}',
    b'{"pid": 1, "processed": [["h", "s", "ok", -5]]}', b'{"pid": 1, "lag": NaN}',
    b'{"pid": 1, "processed": [["h", "s", "ok"]]}',
])
def test_a_line_that_is_no_report_is_refused(line: bytes) -> None:
    with pytest.raises(WireError):
        decode(line)


# -- the supervisor's totals --------------------------------------------------------------

HANDLERS = [HandlerLabels("billing.charge", "orders", "payments", breaker=True)]


def report(pid: int, ok: int = 0, **extra: object) -> Report:
    r = Report(pid=pid, read_age=0.1, capacity=4, **extra)  # type: ignore[arg-type]
    if ok:
        r.processed = [("billing.charge", "orders", "ok", ok)]
    return r


def test_every_outcome_of_every_handler_starts_at_zero() -> None:
    totals = Totals(HANDLERS)

    assert {k[3] for k, n in totals.processed.items() if n == 0} == {
        "ok", "retry", "dead_letter", "fallback", "parked", "skipped", "aborted"}
    assert totals.restarts == {"payments": 0} and totals.reconnects == {"payments": 0}


def test_a_restarted_process_adds_to_what_its_predecessor_sent() -> None:
    totals = Totals(HANDLERS)
    totals.started("payments[0]", "payments", 0, pid=100, now=0.0, failures=0)
    totals.add("payments[0]", report(100, ok=7, reconnects=2), now=1.0)
    totals.add("payments[0]", report(100, ok=3), now=2.0)
    key = ("orders", "billing.charge", "payments", "ok")
    before = dict(totals.processed)

    totals.exited("payments[0]", failures=1)
    totals.restarted("payments")
    totals.started("payments[0]", "payments", 0, pid=101, now=3.0, failures=1)
    totals.add("payments[0]", report(101, ok=1, reconnects=1), now=4.0)

    assert totals.processed[key] == 11
    assert all(totals.processed[k] >= n for k, n in before.items())
    assert totals.restarts == {"payments": 1}
    assert totals.reconnects == {"payments": 3}


def test_a_report_from_a_slot_whose_process_died_is_not_added() -> None:
    totals = Totals(HANDLERS)
    totals.started("payments[0]", "payments", 0, pid=100, now=0.0, failures=0)
    totals.exited("payments[0]", failures=1)

    totals.add("payments[0]", report(100, ok=5), now=1.0)

    assert totals.processed[("orders", "billing.charge", "payments", "ok")] == 0


def test_gauges_sum_the_live_processes_of_a_pool() -> None:
    totals = Totals(HANDLERS)
    for i in range(3):
        totals.started(f"payments[{i}]", "payments", i, pid=100 + i, now=0.0, failures=0)
        totals.add(f"payments[{i}]", report(100 + i, in_flight=i, lag=0.1 * i), now=1.0)
    totals.exited("payments[2]", failures=1)

    assert totals.per_pool() == {"payments": {"in_flight": 1, "capacity": 8,
                                              "processes": 2, "lag": pytest.approx(0.1)}}


def test_durations_add_up_bucket_by_bucket() -> None:
    totals = Totals(HANDLERS)
    totals.started("payments[0]", "payments", 0, pid=1, now=0.0, failures=0)
    one = [0.0] * SLOTS + [0.0]
    one[2], one[SUM] = 1, 0.0003
    totals.add("payments[0]", report(1, durations={"billing.charge": list(one)}), now=1.0)
    totals.add("payments[0]", report(1, durations={"billing.charge": list(one)}), now=2.0)
    totals.add("payments[0]", report(1, durations={"billing.charge": [1.0, 2.0]}), now=3.0)

    total = totals.durations[("billing.charge", "payments")]
    assert total[2] == 2 and total[SUM] == pytest.approx(0.0006) and sum(total[:SUM]) == 2


def test_transitions_heard_by_every_process_of_a_pool_count_once() -> None:
    totals = Totals(HANDLERS)
    heard = [("billing.charge", "closed", "open", 1)]
    for i in range(2):
        totals.started(f"payments[{i}]", "payments", i, pid=i + 1, now=0.0, failures=0)
        totals.add(f"payments[{i}]", report(i + 1, transitions=heard,
                                            breakers={"billing.charge": "open"}), now=1.0)

    assert totals.transitions == {("billing.charge", "closed", "open"): 1}
    assert totals.breaker_states() == {"billing.charge": 2}


def test_the_breaker_state_is_the_most_open_one_a_live_process_heard() -> None:
    totals = Totals(HANDLERS)
    for i, state in enumerate(["closed", "half_open"]):
        totals.started(f"payments[{i}]", "payments", i, pid=i + 1, now=0.0, failures=0)
        totals.add(f"payments[{i}]", report(i + 1, breakers={"billing.charge": state}),
                   now=1.0)
    assert totals.breaker_states() == {"billing.charge": 1}

    totals.exited("payments[1]", failures=1)
    assert totals.breaker_states() == {"billing.charge": 0}


# -- what the gate hears -------------------------------------------------------------------

def test_the_gate_counts_the_changes_it_hears_but_not_its_first_word() -> None:
    gate = BreakerGate(CircuitBreaker(), HandlerKeys("orders", "billing.charge"),
                       "billing.charge", lease_ttl=10)
    assert not gate.heard

    gate._hear("open", None, "a restarted process finds it open")
    gate._hear("half_open", None, "time passed")
    gate._hear("closed", None, "probes succeeded")
    gate._hear("closed", None, "still closed")

    assert gate.heard
    assert gate.take_transitions() == {("open", "half_open"): 1, ("half_open", "closed"): 1}
    assert gate.take_transitions() == {}


# -- health ------------------------------------------------------------------------------------

def view(**fields: object) -> SlotView:
    base: dict[str, object] = {"pool": "payments", "index": 0, "pid": 1, "running": True,
                               "started_at": 0.0, "heard_at": 100.0, "read_age": 0.2}
    base.update(fields)
    return SlotView(**base)  # type: ignore[arg-type]


def test_a_process_that_stopped_reporting_is_stuck() -> None:
    assert health.stuck(view(), now=105.0, stuck_after=10) is None
    assert "no report for 10.5s" in (health.stuck(view(), now=110.5, stuck_after=10) or "")


def test_a_report_of_a_long_stall_is_stuck_too() -> None:
    assert health.stuck(view(lag=12.0), now=100.5, stuck_after=10) is not None
    assert health.stuck(view(lag=3.0), now=100.5, stuck_after=10) is None


def test_a_new_process_has_time_to_load_the_app() -> None:
    new = view(heard_at=None, started_at=100.0)

    assert health.stuck(new, now=100 + health.START_ALLOWANCE - 1, stuck_after=10) is None
    assert health.stuck(new, now=100 + health.START_ALLOWANCE + 1, stuck_after=10)


def test_a_process_killed_for_being_stuck_is_not_killed_again() -> None:
    assert health.stuck(view(killed="blocked"), now=500.0) is None
    assert health.stuck(view(running=False), now=500.0) is None


def test_a_process_that_sent_its_last_report_is_stopping_not_stuck() -> None:
    totals = Totals(HANDLERS)
    totals.started("payments[0]", "payments", 0, pid=1, now=0.0, failures=0)
    totals.add("payments[0]", report(1, final=True), now=1.0)

    assert health.stuck(totals.slots["payments[0]"], now=500.0) is None
    totals.started("payments[0]", "payments", 0, pid=2, now=600.0, failures=0)
    totals.add("payments[0]", report(2), now=601.0)
    assert health.stuck(totals.slots["payments[0]"], now=700.0) is not None


def test_five_quick_crashes_in_a_row_are_a_crash_loop_until_a_process_stays_up() -> None:
    assert not health.crash_looping(view(failures=4, running=False), now=10.0)
    assert health.crash_looping(view(failures=5, running=False), now=10.0)
    assert health.crash_looping(view(failures=5, started_at=0.0), now=10.0)
    assert not health.crash_looping(view(failures=5, started_at=0.0),
                                    now=health.STABLE_AFTER + 1)


def test_alive_unless_the_supervisor_stalls_or_a_pool_crash_loops() -> None:
    # Redis down, a breaker open: the views say nothing of either, and liveness does not ask.
    assert health.liveness([view()], ticked_at=99.0, now=100.0) == []
    assert health.liveness([view()], ticked_at=80.0, now=100.0) == [
        "the supervisor's loop has not run for 20s"]
    assert health.liveness([view(failures=6, running=False)], ticked_at=100.0, now=100.0)


def test_ready_needs_redis_and_every_process_reporting_and_reading() -> None:
    fine = view()
    assert health.readiness([fine], redis_error=None, stopping=False, now=101.0) == []
    assert health.readiness([fine], redis_error="ConnectionError", stopping=False,
                            now=101.0) == ["Redis does not answer: ConnectionError"]
    assert health.readiness([fine], redis_error=None, stopping=True, now=101.0) == ["stopping"]
    assert health.readiness([fine, view(index=1, running=False)], redis_error=None,
                            stopping=False, now=101.0) == ["payments[1] has no process "
                                                           "(restarting)"]
    assert health.readiness([view(heard_at=None)], redis_error=None, stopping=False,
                            now=101.0) == ["payments[0] has not reported yet"]
    assert health.readiness([fine], redis_error=None, stopping=False, now=104.0) == [
        "payments[0] has not reported for 4.0s"]
    assert health.readiness([view(lag=2.5)], redis_error=None, stopping=False, now=101.0)
    assert health.readiness([view(read_age=20.0)], redis_error=None, stopping=False,
                            now=101.0) == ["payments[0] has read from Redis not for 21s"]


def test_a_saturated_pool_is_busy_not_broken() -> None:
    busy = view(read_age=60.0, saturated=True)

    assert health.readiness([busy], redis_error=None, stopping=False, now=101.0) == []


# -- the Prometheus text ------------------------------------------------------------------------

def scrape(snap: Snapshot) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap))
    return generate_latest(registry).decode()


def sample_snapshot() -> Snapshot:
    counts = [0.0] * SLOTS + [0.0]
    counts[0], counts[3], counts[SLOTS - 1], counts[SUM] = 2, 1, 1, 70.0007
    return Snapshot(
        processed={("orders", "billing.charge", "payments", "ok"): 3,
                   ("orders", "billing.charge", "payments", "retry"): 1},
        durations={("billing.charge", "payments"): counts},
        exceptions={("billing.charge", "Flaky"): 1},
        transitions={("billing.charge", "closed", "open"): 1},
        reconnects={"payments": 2}, restarts={"payments": 1},
        pools={"payments": {"in_flight": 1, "capacity": 8, "processes": 1, "lag": 0.002}},
        breakers={"billing.charge": 2},
        fleet=FleetFigures([HandlerFigures("orders", "billing.charge", lag=5, pending=2,
                                           oldest_pending_age=1.5, delayed=1,
                                           dead_letters=4)],
                           {("checkout", "running"): 3}))


def test_the_snapshot_becomes_the_documented_metrics() -> None:
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(scrape(sample_snapshot()))
               for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("seawall_messages_processed_total", stream="orders",
                 handler="billing.charge", pool="payments", outcome="ok") == 3
    assert value("seawall_process_duration_seconds_bucket", handler="billing.charge",
                 pool="payments", le="0.0001") == 2
    assert value("seawall_process_duration_seconds_bucket", handler="billing.charge",
                 pool="payments", le="0.001") == 3
    assert value("seawall_process_duration_seconds_bucket", handler="billing.charge",
                 pool="payments", le="+Inf") == 4
    assert value("seawall_process_duration_seconds_count", handler="billing.charge",
                 pool="payments") == 4
    assert value("seawall_handler_exceptions_total", handler="billing.charge",
                 error_type="Flaky") == 1
    assert value("seawall_messages_in_flight", pool="payments") == 1
    assert value("seawall_pool_capacity", pool="payments") == 8
    assert value("seawall_circuit_breaker_state", handler="billing.charge") == 2
    assert value("seawall_circuit_breaker_transitions_total", handler="billing.charge",
                 **{"from": "closed", "to": "open"}) == 1
    assert value("seawall_pool_restarts_total", pool="payments") == 1
    assert value("seawall_redis_reconnects_total", pool="payments") == 2
    assert value("seawall_consumer_group_lag", stream="orders", handler="billing.charge") == 5
    assert value("seawall_consumer_group_pending", stream="orders",
                 handler="billing.charge") == 2
    assert value("seawall_consumer_group_oldest_pending_age_seconds", stream="orders",
                 handler="billing.charge") == 1.5
    assert value("seawall_retry_delayed", handler="billing.charge") == 1
    assert value("seawall_dead_letters", handler="billing.charge") == 4
    assert value("seawall_sagas", saga="checkout", state="running") == 3


def test_without_redis_figures_the_fleet_gauges_are_left_out() -> None:
    text = scrape(Snapshot(pools={"payments": {"in_flight": 0, "capacity": 1,
                                               "processes": 1, "lag": 0.0}}))

    assert "seawall_pool_capacity" in text
    assert "seawall_consumer_group_lag" not in text and "seawall_dead_letters" not in text


def test_every_family_is_named_seawall_and_labels_carry_no_ids() -> None:
    for family in families(sample_snapshot()):
        assert family.name.startswith("seawall_")
        for s in family.samples:
            assert not {"message_id", "saga_id", "id", "entry_id"} & set(s.labels)


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian: apt-get install prometheus; "
                           ".ci/run installs it when it can)")
def test_promtool_accepts_the_text() -> None:
    done = subprocess.run(["promtool", "check", "metrics"], input=scrape(sample_snapshot()),
                          capture_output=True, text=True, timeout=30)

    assert done.returncode == 0, done.stdout + done.stderr


def test_saga_types_are_read_off_their_steps_streams() -> None:
    handlers = [HandlerLabels("checkout.pay", "seawall:{saga:checkout}:on:orders", "p"),
                HandlerLabels("checkout.undo", "seawall:{saga:checkout}:undo:pay", "p"),
                HandlerLabels("mail", "emails", "p"),
                HandlerLabels("odd", "saga:lookalike", "p")]

    assert saga_names(handlers) == ["checkout"]
