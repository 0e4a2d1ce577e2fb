"""compose.yml, the Prometheus configuration it mounts (docs/prometheus.yml) and Grafana's
provisioning and dashboard (docs/grafana/) stay in step with the code: every query of the
dashboard names only metrics the exporter serves, and every metric served is on the
dashboard; Prometheus scrapes every pool service's metrics port; compose.yml validates
against the Compose specification's schema (check-jsonschema); promtool accepts the
Prometheus configuration; and a real Prometheus (where installed) evaluates every query
of the dashboard over what the exporter serves.

What the exporter serves is read from the exporter itself: a supervisor's hub, in this
process, is given one report of a known workload of the shop's handlers through a pipe, as
a pool process sends it, and its HTTP server (the one ``seawall run --metrics-port``
starts) is scraped. No Redis is needed: the figures read from Redis are given to it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples.shop.app import app as shop
from queues.envelope import Envelope
from workers.cli.health import health
from workers.cli.run import run
from workers.middleware import Call
from workers.observability.counting import MessageMetrics
from workers.observability.fleet import FleetFigures, FleetSampler, HandlerFigures
from workers.observability.hub import Hub
from workers.observability.server import MetricsServer
from workers.observability.totals import HandlerLabels
from workers.observability.wire import Report, encode
from workers.outcome import Outcome

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yml"
PROMETHEUS = ROOT / "docs" / "prometheus.yml"
GRAFANA = ROOT / "docs" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "seawall.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "seawall.yml"
SHOP_APP = "examples.shop.app:app"
METRICS_PORT = 9100

SERVED = {
    "seawall_messages_processed_total",
    "seawall_process_duration_seconds_bucket",
    "seawall_process_duration_seconds_count",
    "seawall_process_duration_seconds_sum",
    "seawall_handler_exceptions_total",
    "seawall_messages_in_flight",
    "seawall_pool_capacity",
    "seawall_pool_processes",
    "seawall_event_loop_lag_seconds",
    "seawall_circuit_breaker_state",
    "seawall_circuit_breaker_transitions_total",
    "seawall_pool_restarts_total",
    "seawall_redis_reconnects_total",
    "seawall_consumer_group_lag",
    "seawall_consumer_group_pending",
    "seawall_consumer_group_oldest_pending_age_seconds",
    "seawall_retry_delayed",
    "seawall_dead_letters",
    "seawall_sagas",
}
"""The sample names ``seawall run --metrics-port`` serves (workers/observability/exporter.py);
a test below checks the exporter serves exactly these."""


def yaml_load(path: Path) -> Any:
    yaml = pytest.importorskip(
        "ruamel.yaml", reason="ruamel.yaml (installed with check-jsonschema, the test extra)")
    return yaml.YAML(typ="safe", pure=True).load(path.read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- what the exporter serves ----------------------------------------------------------------

class ProviderUnavailable(Exception):
    pass


def shop_handlers() -> list[HandlerLabels]:
    """The shop's handlers as ``seawall run`` tells its hub of them."""
    return [HandlerLabels(r.name, r.stream, r.pool, r.breaker is not None)
            for pool in shop.pools for r in shop.records_of(pool)]


CHARGE = next(h for h in shop_handlers() if h.name == "checkout.charge")


def known_report() -> Report:
    """One pool process's report of a known workload on the shop's checkout.charge (as the
    pool counts it: MessageMetrics, the observer every message goes through)."""
    metrics = MessageMetrics()
    envelope = Envelope(CHARGE.stream, "1-0", {})

    def call(duration: float) -> Call:
        c = Call(CHARGE.name, CHARGE.pool, CHARGE.stream, envelope, 0.0)
        c.duration = duration
        return c

    for _ in range(5):
        metrics(call(0.02), Outcome.ok())
    metrics(call(0.5), Outcome.retry(ProviderUnavailable("down"), 0))
    metrics(call(0.5), Outcome.dead_letter(ProviderUnavailable("down"), "gave up"))
    metrics(call(0.0), Outcome.parked(0))
    metrics(call(0.0), Outcome.skipped())
    metrics(call(0.001), Outcome.fallback())
    deltas = metrics.take_deltas()
    return Report(
        pid=os.getpid(), lag=0.003, read_age=0.1, in_flight=2, capacity=8,
        processed=[(h, CHARGE.stream, kind, n) for (h, kind), n in deltas.processed.items()],
        durations=deltas.durations,
        exceptions=[(h, t, n) for (h, t), n in deltas.exceptions.items()],
        breakers={CHARGE.name: "open"}, transitions=[(CHARGE.name, "closed", "open", 1)],
        reconnects=1)


def fleet_figures() -> FleetFigures:
    """What the supervisor would read from Redis."""
    return FleetFigures(
        [HandlerFigures(CHARGE.stream, CHARGE.name, lag=40, pending=3, oldest_pending_age=7.5,
                        delayed=2, dead_letters=1)],
        {("checkout", state): n for state, n in
         {"running": 12, "completed": 30, "compensating": 1, "timed_out": 1,
          "compensated": 4, "failed": 1}.items()})


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    """The URL of /metrics served by a supervisor's hub and server, in this process, after
    the shop's payments pool sent one report of a known workload and was restarted once."""
    handlers = shop_handlers()
    hub = Hub(app_path=SHOP_APP, redis_url="redis://127.0.0.1:1/0", handlers=handlers)
    write_fd = hub.open_pipe("payments-0")
    hub.started("payments-0", "payments", 0, os.getpid(), 0)
    os.write(write_fd, encode(known_report()))
    hub.wait(1.0)
    os.close(write_fd)
    hub.restarted("payments")
    sampler = FleetSampler(hub.redis_url, handlers)  # not started: its figures are given
    sampler.latest = fleet_figures()
    hub.sampler = sampler
    server = MetricsServer(hub, "127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}/metrics"
    finally:
        server.stop()
        hub.sampler = None  # never started: nothing to stop
        hub.close()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text: str = reply.read().decode()
        return text


def test_the_exporter_serves_the_listed_metrics(exporter: str) -> None:
    families = list(text_string_to_metric_families(scrape(exporter)))
    samples = {s.name for f in families for s in f.samples}

    assert samples == SERVED
    assert all(f.samples for f in families), "every family has a sample in this workload"
    processed = {s.labels["outcome"]: s.value for f in families for s in f.samples
                 if s.name == "seawall_messages_processed_total"
                 and s.labels["handler"] == CHARGE.name}
    assert processed == {"ok": 5, "retry": 1, "dead_letter": 1, "parked": 1, "skipped": 1,
                         "fallback": 1, "aborted": 0}


# -- the dashboard ---------------------------------------------------------------------------

def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def queries(board: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, expr, legend) of every panel target and every query variable."""
    found = []
    for panel in panels(board):
        for t in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {t['refId']}", t["expr"],
                          t.get("legendFormat", "")))
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            found.append((f"variable {var['name']!r}",
                          q["query"] if isinstance(q, dict) else q, ""))
    return found


KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or Grafana's label_values(...)) selects."""
    expr = re.sub(r"label_values\(\s*([^,]+?)\s*,\s*\w+\s*\)", r"\1", expr)
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ",
                  expr)  # label lists
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana's variables
    names = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", expr)
    return {n for n in names if n.lower() not in KEYWORDS}


def test_metric_names_are_read_out_of_queries() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (handler, le) (rate('
                        'seawall_process_duration_seconds_bucket{pool=~"$pool"}'
                        '[$__rate_interval])))') == {"seawall_process_duration_seconds_bucket"}
    assert metric_names("sum(rate(a_total[5m])) / on (x) group_left sum(b)") == {"a_total",
                                                                                  "b"}
    assert metric_names('label_values(seawall_pool_capacity{pool=~"a"}, pool)') == {
        "seawall_pool_capacity"}


def test_every_query_of_the_dashboard_names_only_served_metrics() -> None:
    found = queries(dashboard())

    assert found
    for where, expr, _ in found:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= SERVED, f"{where}: {sorted(names - SERVED)} are not served ({expr!r})"


def test_every_served_metric_is_on_the_dashboard() -> None:
    shown = set().union(*(metric_names(expr) for _, expr, _ in queries(dashboard())))
    histograms = {n.rsplit("_", 1)[0] for n in SERVED if n.endswith("_bucket")}
    families = {n for n in SERVED
                if not any(n.startswith(f"{h}_") for h in histograms)} | histograms

    missing = {f for f in families if not any(n == f or n.startswith(f"{f}_") for n in shown)}
    assert not missing, f"served but on no panel of {DASHBOARD.name}: {sorted(missing)}"


def test_the_dashboard_shows_what_an_operator_looks_for() -> None:
    exprs = " ".join(expr for _, expr, _ in queries(dashboard()))

    assert re.search(r"sum by \(outcome\) \(rate\(seawall_messages_processed_total", exprs)
    assert re.search(r"histogram_quantile\(0\.99, sum by \(handler, le\) \(rate\("
                     r"seawall_process_duration_seconds_bucket", exprs)
    assert "sum by (handler, error_type) (rate(seawall_handler_exceptions_total" in exprs
    assert 'outcome=~"retry|dead_letter"' in exprs
    for gauge in ("seawall_circuit_breaker_state", "seawall_consumer_group_lag",
                  "seawall_consumer_group_oldest_pending_age_seconds", "seawall_sagas"):
        assert re.search(rf"max by \([\w, ]+\) \({gauge}\b", exprs), gauge
    assert "increase(seawall_pool_restarts_total" in exprs


def test_the_dashboard_uses_the_provisioned_data_source() -> None:
    board = dashboard()
    (source,) = yaml_load(DATASOURCES)["datasources"]
    ids = [p["id"] for p in panels(board)]

    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        for owner in (panel, *panel["targets"]):
            assert owner["datasource"] == {"type": "prometheus", "uid": source["uid"]}, (
                panel["title"])
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    for var in board["templating"]["list"]:
        assert var["datasource"]["uid"] == source["uid"]


# -- compose.yml -----------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml_load(COMPOSE)
    return data


def pool_services(services: dict[str, Any]) -> dict[str, list[str]]:
    """name -> command of every service that runs `seawall run`."""
    return {name: s["command"] for name, s in services.items()
            if s.get("command", [])[:2] == ["seawall", "run"]}


def options(command: object) -> set[str]:
    return {o for p in command.params for o in getattr(p, "opts", [])}  # type: ignore[attr-defined]


def test_every_pool_of_the_shop_runs_as_a_service_serving_metrics() -> None:
    services = compose()["services"]
    pools = pool_services(services)
    with_handlers = {p for p in shop.pools if shop.handlers_of(p)}

    assert {"--pool", "--metrics-port"} <= options(run)
    assert set(pools) == with_handlers
    for name, command in pools.items():
        assert command == ["seawall", "run", SHOP_APP, "--pool", name,
                           "--metrics-port", str(METRICS_PORT)], name
        check = services[name]["healthcheck"]["test"]
        assert check[:3] == ["CMD", "seawall", "health"], name
        assert set(check[3:]) - {str(METRICS_PORT)} <= options(health), name


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            out[target] = (COMPOSE.parent / source).resolve()
    return out


def test_prometheus_scrapes_every_pool_service_with_the_config_from_docs() -> None:
    services = compose()["services"]
    config = yaml_load(PROMETHEUS)
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}

    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert mounts(services["prometheus"]) == {"/etc/prometheus/prometheus.yml": PROMETHEUS}
    assert targets == {f"{name}:{METRICS_PORT}" for name in pool_services(services)}


def test_grafana_gets_the_provisioning_and_the_dashboard_from_docs() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    (provider,) = yaml_load(PROVIDERS)["providers"]
    mounted = mounts(grafana)

    assert grafana["image"].startswith("grafana/grafana:")
    assert mounted["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    assert mounted[provider["options"]["path"]] == DASHBOARD.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    assert "prometheus" in grafana["depends_on"]


def test_compose_file_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    if not checker.exists():
        found = shutil.which("check-jsonschema")
        if found is None:
            pytest.skip("check-jsonschema is not installed (it is in the test extra: "
                        "pip install -e '.[test]')")
        checker = Path(found)
    done = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec",
                           str(COMPOSE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian: apt-get install prometheus; "
                           ".ci/run tries)")
def test_promtool_accepts_the_prometheus_configuration() -> None:
    done = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# -- a real Prometheus over the exporter ------------------------------------------------------

def ask(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def runnable(expr: str) -> str:
    """A dashboard query as Grafana sends it, its variables filled in: every pool and every
    handler (``.+``, so a matcher on a label the metric lacks selects nothing)."""
    labels = re.fullmatch(r"label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)", expr)
    if labels:
        expr = f"count by ({labels.group(2)}) ({labels.group(1)})"
    for var, value in {"$__rate_interval": "30s", "$__range": "1m", "$pool": ".+",
                       "$handler": ".+"}.items():
        expr = expr.replace(var, value)
    return expr


@pytest.fixture
def prometheus(exporter: str, tmp_path: Path) -> Iterator[str]:
    """A Prometheus, the job of docs/prometheus.yml pointed at the exporter, scraping every
    second; its URL once it has three scrapes."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    config = yaml_load(PROMETHEUS)
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [urllib.parse.urlsplit(exporter).netloc]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    result = ask(base, "/api/v1/query",
                                 query="count_over_time(seawall_pool_capacity[1m])")
                    if any(float(r["value"][1]) >= 3 for r in result["data"]["result"]):
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail("Prometheus did not scrape the exporter three times:\n"
                                + log.read().decode(errors="replace")[-3000:])
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_prometheus_evaluates_every_query_of_the_dashboard(prometheus: str) -> None:
    for where, expr, legend in queries(dashboard()):
        reply = ask(prometheus, "/api/v1/query", query=runnable(expr))
        assert reply["status"] == "success", (where, expr, reply)
        series = reply["data"]["result"]
        assert series, f"{where}: no series for {expr!r}"
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            assert all(label in s["metric"] for s in series), (
                f"{where}: its legend names {label!r}, which {expr!r} does not keep")
