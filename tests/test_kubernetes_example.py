"""docs/kubernetes.yaml stays in step with the CLI: its probes run `seawall health` with
flags the command has, on the port `seawall run` serves (SEAWALL_METRICS_PORT)."""

from __future__ import annotations

import re
from pathlib import Path

from workers.cli.health import health
from workers.cli.run import run
from workers.observability.probe import METRICS_PORT_ENV

MANIFEST = Path(__file__).resolve().parent.parent / "docs" / "kubernetes.yaml"


def options(command: object) -> set[str]:
    return {o for p in command.params for o in getattr(p, "opts", [])}  # type: ignore[attr-defined]


def test_the_probes_ask_seawall_health_with_flags_it_has() -> None:
    text = MANIFEST.read_text()
    live = re.search(r"livenessProbe:\s*\n\s*exec: \{command: \[(.*?)\]\}", text)
    ready = re.search(r"readinessProbe:\s*\n\s*exec: \{command: \[(.*?)\]\}", text)

    assert live and ready
    assert live.group(1) == '"seawall", "health", "--live"'
    assert ready.group(1) == '"seawall", "health", "--ready"'
    assert {"--live", "--ready", "--metrics-port"} <= options(health)


def test_seawall_run_and_the_probes_share_the_metrics_port() -> None:
    text = MANIFEST.read_text()
    port = re.search(rf"- name: {METRICS_PORT_ENV}\s*\n\s*value: \"(\d+)\"", text)

    assert port, f"the container sets {METRICS_PORT_ENV}"
    assert f"containerPort: {port.group(1)}" in text
    assert f'prometheus.io/port: "{port.group(1)}"' in text
    assert '"seawall", "run"' in text and "--metrics-port" in options(run)
    assert "startupProbe" not in text.split("# (No startupProbe")[0]
