"""Asking a running supervisor whether it is alive or ready: what ``seawall health`` does
for exec probes, without importing the app or starting anything. One HTTP GET of
``/livez`` or ``/readyz`` on the supervisor's metrics port, with a timeout."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from typing import Any

LIVE = "livez"
READY = "readyz"
METRICS_PORT_ENV = "SEAWALL_METRICS_PORT"
"""The default of ``seawall run --metrics-port`` and of ``seawall health --metrics-port``."""


@dataclass(frozen=True, slots=True)
class Answer:
    ok: bool
    problems: list[str] = field(default_factory=list)
    app: str | None = None
    """The app the supervisor runs (``module:attribute``), if it answered."""


def ask(host: str, port: int, check: str, timeout: float = 2.0) -> Answer:
    """GET ``/<check>``; a supervisor that does not answer in time is not ok."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", f"/{check}")
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return Answer(False, [f"no answer from the supervisor at {host}:{port} ({exc})"])
    finally:
        connection.close()
    data: dict[str, Any] = {}
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            data = parsed
    except ValueError:
        pass
    problems = [str(p) for p in data.get("problems", [])]
    if response.status != 200 and not problems:
        problems = [f"HTTP {response.status}"]
    app = data.get("app")
    return Answer(response.status == 200, problems, app if isinstance(app, str) else None)
