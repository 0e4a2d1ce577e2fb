"""The supervisor's HTTP endpoints, on ``seawall run --metrics-port PORT`` (pool processes
open no port):

* ``GET /metrics``: Prometheus text format (OpenMetrics when the scraper asks for it);
* ``GET /livez``: 200 while the supervisor is alive, 503 when its loop is stuck or a pool
  is crash-looping; never because Redis is down or a breaker is open;
* ``GET /readyz``: 200 when Redis answers and every pool process is consuming, else 503.

The probes answer a small JSON document (``status``, ``app``, ``problems``), which
``seawall health`` prints. A plain ``http.server`` on a daemon thread: a scrape or a probe
never runs on the supervisor's loop.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from workers.observability.exporter import SnapshotCollector

if TYPE_CHECKING:
    from workers.observability.hub import Hub

log = logging.getLogger("seawall.metrics")


class MetricsServer:
    def __init__(self, hub: Hub, host: str, port: int) -> None:
        self.hub = hub
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(hub.snapshot))
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="seawall-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server_state: MetricsServer
    server_version = "seawall"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        state = self.server_state
        try:
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._reply(200, encoder(state.registry), content_type)
            elif path == "/livez":
                self._probe(state.hub.liveness())
            elif path == "/readyz":
                self._probe(state.hub.readiness())
            elif path == "/":
                self._reply(200, b"seawall: /metrics /livez /readyz\n",
                            "text/plain; charset=utf-8")
            else:
                self._reply(404, b"not found\n", "text/plain; charset=utf-8")
        except Exception:
            log.exception("metrics endpoint failed", extra={"path": path})
            self._reply(500, b"internal error\n", "text/plain; charset=utf-8")

    def _probe(self, problems: list[str]) -> None:
        body: dict[str, Any] = {"status": "fail" if problems else "ok",
                                "app": self.server_state.hub.app_path, "problems": problems}
        self._reply(503 if problems else 200, json.dumps(body).encode() + b"\n",
                    "application/json")

    def _reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would fill the log
