"""Metrics and health probes of real ``seawall run`` supervisors and pool processes.

* Given a known workload (n ok, k retried once, j dead-lettered, a breaker that opens once),
  a scrape of ``/metrics`` shows exactly those counts; after a SIGKILL of the pool process
  and its restart no counter went down; ``promtool check metrics`` accepts the scrape.
* While the Redis under test is stopped, ``/livez`` stays 200 and ``/readyz`` turns 503;
  both recover when it is back.
* A pool whose event loop is blocked (``time.sleep`` in an ``async def``) is reported
  (``/readyz`` 503) and restarted, until its message is dead-lettered as poison.
* A pool that crash-loops fails ``/livez``.
* ``seawall health`` answers each case with its documented exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.failure_helpers import DurableRedis
from e2e.support import E2E, Proc, alive, wait_until
from workers.app import App
from workers.cli.private_redis import free_port, redis_server_path

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# -- asking the supervisor -----------------------------------------------------------------

def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, repr(error)


def scrape(port: int) -> tuple[str, Samples]:
    status, text = get(port, "/metrics")
    assert status == 200, text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def counters(samples: Samples) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter sample (and the histogram's cumulative series, which only grow)."""
    return {k: v for k, v in samples.items()
            if k[0].endswith(("_total", "_bucket", "_count", "_sum"))}


def health(e2e: E2E, *args: str, port: int | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "SEAWALL_METRICS_PORT"}
    command = [sys.executable, "-m", "workers", "health", *args]
    if port is not None:
        command += ["--metrics-port", str(port)]
    done = subprocess.run(command, cwd=e2e.tmp, env=env, capture_output=True, text=True,
                          timeout=30)
    return done.returncode, done.stdout + done.stderr


def wait_status(port: int, path: str, status: int, run: Proc, timeout: float = 30) -> str:
    return wait_until(lambda: (reply := get(port, path))[0] == status and reply[1],
                      timeout=timeout, interval=0.1, what=f"{path} to answer {status}",
                      details=lambda: f"{get(port, path)}\n{run.logs()}")


# -- a known workload ----------------------------------------------------------------------

WORKLOAD = """
from tenacity import stop_after_attempt, wait_none
from workers import CircuitBreaker, NonRetryable

app.pool("work", concurrency=8, claim_after=600)


class Flaky(Exception):
    "Fails on the first attempt only."


class Down(Exception):
    "The dependency is down."


@app.handler({stream!r}, pool="work", name={handler!r}, stop=stop_after_attempt(3),
             wait=wait_none())
async def work(msg: Msg, ctx: Context) -> None:
    if msg.n % 10 == 1 and ctx.attempt == 1:
        raise Flaky("first attempt")
    if msg.n % 10 == 2:
        raise NonRetryable("never")


@app.handler({down_stream!r}, pool="work", name={down!r}, stop=stop_after_attempt(1),
             breaker=CircuitBreaker(window=4, min_calls=4, failure_rate=0.5, open_for=600))
async def call_down(msg: Msg) -> None:
    raise Down("no answer")
"""

N = 30
"""Messages to ``work``: n % 10 == 1 fails once (k = 3), n % 10 == 2 is dead-lettered (j = 3)."""
DOWN = 4
"""Messages to ``call_down``: all fail; the fourth failure opens its breaker."""


def test_a_scrape_shows_exactly_the_workload_and_no_counter_goes_down_after_a_kill(
        e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("work")
    down_stream, down = e2e.stream("down"), e2e.handler("down")
    app_path = e2e.write_app(WORKLOAD.format(stream=stream, handler=handler,
                                             down_stream=down_stream, down=down))
    port = free_port()
    run = e2e.run(app_path, "--metrics-port", str(port))
    wait_status(port, "/readyz", 200, run)

    # Given n ok, k retried once, j dead-lettered, and a breaker that opens once,
    e2e.app.publish_many(stream, ({"n": n} for n in range(N)))
    e2e.app.publish_many(down_stream, ({"n": n} for n in range(DOWN)))
    k = j = N // 10
    ok, retried, dead = N - j, k, j
    labels = {"stream": stream, "handler": handler, "pool": "work"}

    def settled(samples: Samples) -> tuple[float | None, ...]:
        return tuple(value(samples, "seawall_messages_processed_total", **labels, outcome=o)
                     for o in ("ok", "retry", "dead_letter"))

    def done() -> Samples | None:
        _, samples = scrape(port)
        complete = (settled(samples) == (ok, retried, dead)
                    and value(samples, "seawall_dead_letters", handler=down) == DOWN
                    and value(samples, "seawall_dead_letters", handler=handler) == dead)
        return samples if complete else None

    samples = wait_until(done, timeout=30, interval=0.2, what="the workload in /metrics",
                         details=lambda: scrape(port)[0] + run.logs())

    # then /metrics shows exactly those counts,
    for outcome in ("fallback", "parked", "skipped", "aborted"):
        assert value(samples, "seawall_messages_processed_total", **labels,
                     outcome=outcome) == 0
    assert value(samples, "seawall_messages_processed_total", stream=down_stream,
                 handler=down, pool="work", outcome="dead_letter") == DOWN
    assert value(samples, "seawall_handler_exceptions_total", handler=handler,
                 error_type="Flaky") == k
    assert value(samples, "seawall_handler_exceptions_total", handler=handler,
                 error_type="NonRetryable") == j
    assert value(samples, "seawall_handler_exceptions_total", handler=down,
                 error_type="Down") == DOWN
    assert value(samples, "seawall_process_duration_seconds_count", handler=handler,
                 pool="work") == ok + retried + dead
    assert value(samples, "seawall_process_duration_seconds_bucket", handler=handler,
                 pool="work", le="+Inf") == ok + retried + dead
    assert value(samples, "seawall_circuit_breaker_transitions_total", handler=down,
                 **{"from": "closed", "to": "open"}) == 1
    assert value(samples, "seawall_circuit_breaker_state", handler=down) == 2
    assert value(samples, "seawall_pool_capacity", pool="work") == 8
    assert value(samples, "seawall_pool_processes", pool="work") == 1
    assert value(samples, "seawall_pool_restarts_total", pool="work") == 0
    assert value(samples, "seawall_consumer_group_lag", stream=stream, handler=handler) == 0
    assert value(samples, "seawall_retry_delayed", handler=handler) == 0
    # (and they stay so: nothing is counted twice)
    time.sleep(2.5)
    text, again = scrape(port)
    assert counters(again) == counters(samples)
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run([promtool, "check", "metrics"], input=text,
                                 capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stdout + checked.stderr

    # When the pool process is SIGKILLed and restarted,
    [old_pid] = run.wait_children(1)
    os.kill(old_pid, signal.SIGKILL)
    [new_pid] = wait_until(lambda: (kids := run.children()) and kids != [old_pid] and kids,
                           timeout=15, what="the restarted pool process", details=run.logs)
    wait_status(port, "/readyz", 200, run)
    more = 10
    e2e.app.publish_many(stream, ({"n": 1000 + 10 * i} for i in range(more)))

    # then no counter went down, and the new process's counts add to the old one's.
    after = wait_until(lambda: (s := scrape(port)[1]) and settled(s)[0] == ok + more and s,
                       timeout=30, interval=0.2, what="the new messages in /metrics",
                       details=lambda: scrape(port)[0] + run.logs())
    went_down = {k: (v, after.get(k)) for k, v in counters(samples).items()
                 if after.get(k) is None or after[k] < v}
    assert went_down == {}
    assert settled(after) == (ok + more, retried, dead)
    assert value(after, "seawall_pool_restarts_total", pool="work") == 1
    assert value(after, "seawall_pool_processes", pool="work") == 1
    # The breaker is still open; the new process heard it so, which is no transition.
    assert value(after, "seawall_circuit_breaker_transitions_total", handler=down,
                 **{"from": "closed", "to": "open"}) == 1
    assert alive(new_pid)

    run.signal(signal.SIGTERM)
    assert run.wait(timeout=20) == 0


def test_a_taken_metrics_port_fails_the_command_before_any_pool_starts(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("idle")
    app_path = e2e.write_app(f"""
@app.handler({stream!r}, name={handler!r})
async def idle(msg: Msg) -> None:
    pass
""")
    port = free_port()
    first = e2e.run(app_path, "--metrics-port", str(port))
    wait_status(port, "/livez", 200, first)

    second = e2e.run(app_path, "--metrics-port", str(port))

    assert second.wait(timeout=30) == 1
    assert f"cannot serve metrics on port {port}" in second.logs()
    assert second.children() == []
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0


# -- Redis away ----------------------------------------------------------------------------

STEADY = """
app.pool("steady", concurrency=2, claim_after=600)


@app.handler({stream!r}, pool="steady", name={handler!r})
async def work(msg: Msg) -> None:
    pass
"""


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    if redis_server_path() is None:
        pytest.skip("needs redis-server on PATH")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = DurableRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_livez_stays_up_while_redis_is_down_and_readyz_follows_redis(
        e2e: E2E, durable_redis: DurableRedis) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("work")
    app_path = e2e.write_app(STEADY.format(stream=stream, handler=handler))
    port = free_port()
    run = e2e.run(app_path, "--redis-url", durable_redis.url, "--metrics-port", str(port))
    producer = App(e2e.app_name, redis_url=durable_redis.url)
    try:
        # Given a deployment that is ready,
        wait_status(port, "/readyz", 200, run)
        assert health(e2e, "--ready", port=port)[0] == 0
        assert health(e2e, "--live", port=port)[0] == 0
        [pool_pid] = run.wait_children(1)

        # when its Redis stops,
        durable_redis.stop()

        # then /readyz turns 503 and says why, while /livez stays 200 throughout.
        body = wait_status(port, "/readyz", 503, run, timeout=10)
        assert "Redis does not answer" in " ".join(json.loads(body)["problems"])
        code, out = health(e2e, "--ready", port=port)
        assert code == 1 and out.startswith("not ready: "), out
        assert health(e2e, "--live", port=port)[0] == 0
        for _ in range(10):
            assert get(port, "/livez")[0] == 200
            time.sleep(0.3)
        wait_until(lambda: "Redis unreachable" in run.logs(200), timeout=10,
                   what="the pool to notice", details=run.logs)

        # When Redis is back, both recover: the same pool process reads again.
        durable_redis.start()
        wait_status(port, "/readyz", 200, run, timeout=30)
        assert health(e2e, "--ready", port=port)[0] == 0
        assert get(port, "/livez")[0] == 200
        producer.publish(stream, {"n": 1})
        _, samples = wait_until(
            lambda: (got := scrape(port)) and value(
                got[1], "seawall_messages_processed_total", stream=stream, handler=handler,
                pool="steady", outcome="ok") == 1 and got,
            timeout=20, what="the message after the outage", details=run.logs)
        assert (value(samples, "seawall_redis_reconnects_total", pool="steady") or 0) >= 1
        assert value(samples, "seawall_pool_restarts_total", pool="steady") == 0
        assert run.children() == [pool_pid]

        run.signal(signal.SIGTERM)
        assert run.wait(timeout=20) == 0
    finally:
        producer.close()


# -- a blocked event loop ------------------------------------------------------------------

BLOCKING = """
app.pool("stuck", concurrency=4, claim_after=600, max_deliveries=2)


@app.handler({stream!r}, pool="stuck", name={handler!r})
async def block(msg: Msg) -> None:
    time.sleep(30)  # blocks the event loop: nothing else of the pool runs meanwhile
"""


def test_a_pool_whose_event_loop_is_blocked_is_reported_and_restarted(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("block")
    app_path = e2e.write_app(BLOCKING.format(stream=stream, handler=handler))
    port = free_port()
    run = e2e.run(app_path, "--metrics-port", str(port), "--stuck-after", "6")
    wait_status(port, "/readyz", 200, run)
    [first_pid] = run.wait_children(1)

    # Given a message whose handler blocks the pool's event loop for 30 s,
    e2e.app.publish(stream, {"n": 1})

    # then /readyz reports the pool (it stopped reporting) before it counts as stuck,
    body = wait_status(port, "/readyz", 503, run, timeout=10)
    assert "stuck[0] has not reported for" in body
    assert alive(first_pid) and run.children() == [first_pid]
    code, out = health(e2e, "--ready", app_path, port=port)
    assert code == 1 and "has not reported" in out
    assert health(e2e, "--live", port=port)[0] == 0

    # and the supervisor kills it and starts another (which runs the message again, and is
    # killed again, until the message counts as poison and is dead-lettered).
    wait_until(lambda: "pool process stuck; killing it" in run.logs(400), timeout=15,
               what="the stuck process killed", details=run.logs)
    wait_until(lambda: not alive(first_pid), timeout=5, what="the old process gone")
    dlq = f"seawall:{{{stream}}}:dlq:{handler}"
    wait_until(lambda: e2e.client.xlen(dlq) == 1, timeout=60, interval=0.2,
               what="the blocking message dead-lettered as poison", details=run.logs)
    wait_status(port, "/readyz", 200, run, timeout=30)
    assert health(e2e, "--ready", app_path, port=port)[0] == 0
    assert get(port, "/livez")[0] == 200
    _, samples = scrape(port)
    assert (value(samples, "seawall_pool_restarts_total", pool="stuck") or 0) >= 2
    assert value(samples, "seawall_messages_processed_total", stream=stream, handler=handler,
                 pool="stuck", outcome="dead_letter") == 1
    [fields] = [f for _, f in e2e.client.xrange(dlq)]
    assert fields[b"dlq_error_type"] == b"PoisonMessage"

    run.signal(signal.SIGTERM)
    assert run.wait(timeout=20) == 0


# -- a crash loop --------------------------------------------------------------------------

CRASHING = """
import threading

app.pool("crashy", concurrency=2, claim_after=600)

if os.environ.get("SEAWALL_TELEMETRY_FD"):  # in the pool processes, not in `seawall run`
    threading.Timer(0.3, os._exit, [3]).start()


@app.handler({stream!r}, pool="crashy", name={handler!r})
async def work(msg: Msg) -> None:
    pass
"""


def test_a_pool_that_crash_loops_fails_livez(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("work")
    app_path = e2e.write_app(CRASHING.format(stream=stream, handler=handler))
    port = free_port()

    # Given a pool whose processes die a moment after they start,
    run = e2e.run(app_path, "--metrics-port", str(port))
    wait_status(port, "/livez", 200, run)

    # then after five crashes in a row (restarted 0.5, 1, 2, 4 s later) /livez fails,
    body = wait_status(port, "/livez", 503, run, timeout=60)
    assert "crashy[0] is crash-looping" in body
    code, out = health(e2e, "--live", port=port)
    assert code == 1 and "crash-looping" in out, out
    assert health(e2e, "--ready", port=port)[0] == 1
    _, samples = scrape(port)
    assert (value(samples, "seawall_pool_restarts_total", pool="crashy") or 0) >= 4

    run.signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 0


# -- seawall health's exit codes -----------------------------------------------------------

def test_seawall_health_exit_codes_without_a_supervisor(e2e: E2E) -> None:
    code, out = health(e2e)
    assert code == 2 and "--metrics-port" in out                      # usage
    code, out = health(e2e, "--ready", port=free_port())
    assert code == 1 and out.startswith("not ready: no answer")        # nobody listening


def test_seawall_health_checks_the_app_it_is_given_without_importing_it(e2e: E2E) -> None:
    stream, handler = e2e.stream("orders"), e2e.handler("idle")
    app_path = e2e.write_app(f"""
@app.handler({stream!r}, name={handler!r})
async def idle(msg: Msg) -> None:
    pass
""")
    port = free_port()
    run = e2e.run(app_path, "--metrics-port", str(port))
    wait_status(port, "/readyz", 200, run)

    assert health(e2e, app_path, "--live", port=port)[0] == 0
    # (a module that does not even exist: it is compared, never imported)
    code, out = health(e2e, "no_such_module:app", "--live", port=port)
    assert code == 1 and f"serves {app_path}" in out

    run.signal(signal.SIGTERM)
    assert run.wait(timeout=20) == 0
