"""``/healthz`` and Prometheus ``/metrics`` over plain HTTP (127.0.0.1 by default)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ecgbridge.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("ecgbridge.service.http")


class HealthServer:
    """A small threaded HTTP server.

    Parameters
    ----------
    host, port : str, int
        Bind address (port 0 picks a free one; see :attr:`port`).
    metrics : Metrics
        Rendered at ``/metrics``.
    health : callable
        Returns ``(ok, details)`` for ``/healthz`` (200 if ok, else 503); status
        "degraded" (still 200) when ``details["degraded"]`` lists reasons.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        health: Callable[[], tuple[bool, dict[str, Any]]],
    ) -> None:
        self.metrics = metrics
        self.health = health
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "ecgbridge"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE, outer.metrics.render().encode())
                elif path in ("/healthz", "/health"):
                    ok, details = outer.health()
                    status = "degraded" if ok and details.get("degraded") else "ok"
                    body = json.dumps({"status": status if ok else "unhealthy", **details})
                    self._send(200 if ok else 503, "application/json", body.encode())
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("http: " + format, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="ecgbridge-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (if started) and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5.0)
            self._thread = None
        self._httpd.server_close()
