"""The webhook receiver: ``POST /webhooks/openai``, verified, recorded, answered at once.

For each delivery: refuse a body longer than the cap before reading it, verify the
Standard Webhooks signature (``core/webhooks.py``), read the batch id, then record
the event and make the batch due in one transaction (``db/webhooks.py``), and only
then answer 2xx. A redelivery finds its row and is acknowledged without acting
again. Anything refused gets a 4xx (the sender's retry cannot make it valid); a
database problem gets a 503, so the sender delivers it again later.

Plain ``http.server`` with one thread per connection, at most ``max_connections``
at once: the work per request is one small transaction, and no framework is needed.
``GET /healthz`` answers whether the database does; ``GET /metrics`` is Prometheus.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.clock import Clock
from orchestrator.core.webhooks import WebhookRejected, parse_event, parse_secrets, verify
from orchestrator.db.database import Database
from orchestrator.db.webhooks import WebhookStore
from orchestrator.errors import DatabaseError
from orchestrator.secret import Secret
from orchestrator.settings import Settings

__all__ = ["PATH", "ReceiverConfig", "WebhookReceiver"]

log = logging.getLogger(__name__)

PATH = "/webhooks/openai"
READ_TIMEOUT_S = 10.0  # a sender that stalls mid-body loses its connection
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True, kw_only=True)
class ReceiverConfig:
    secret: Secret
    max_body_bytes: int = 1_048_576
    tolerance_seconds: int = 300
    adopt_unknown: bool = False
    max_connections: int = 64

    @staticmethod
    def from_settings(settings: Settings) -> ReceiverConfig:
        return ReceiverConfig(
            secret=settings.webhook_secret,
            max_body_bytes=settings.webhook_max_body_bytes,
            tolerance_seconds=settings.webhook_tolerance_seconds,
            adopt_unknown=settings.webhook_unknown_batches == "adopt",
        )


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "orchestrator_webhook_deliveries",
            "Webhook deliveries, by outcome (due, adopted, ignored, settled, recorded, "
            "duplicate, rejected, too_large, unavailable).",
            ["outcome"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "orchestrator_webhook_handling_seconds",
            "Time from a delivery's headers to our answer.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_S
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # every delivery is logged once, structured, in _deliver

    def do_GET(self) -> None:
        if self.path == "/healthz":
            healthy = self.server.receiver.healthy()
            self._answer(200 if healthy else 503, {"healthy": healthy})
        elif self.path == "/metrics":
            body = generate_latest(self.server.receiver.metrics.registry)
            self._send(200, body, "text/plain; version=0.0.4")
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != PATH:
            self._answer(404, {"error": "not found"}, close=True)
            return
        started = time.perf_counter()
        code, answer = self._deliver()
        self.server.receiver.metrics.seconds.observe(time.perf_counter() - started)
        self._answer(code, answer, close=code >= 400)

    def _deliver(self) -> tuple[int, dict[str, object]]:
        receiver = self.server.receiver
        length = self.headers.get("content-length", "")
        if not length.isdigit():
            return receiver.refused("rejected", 411, "a Content-Length is required")
        if int(length) > receiver.config.max_body_bytes:
            return receiver.refused(
                "too_large", 413, f"body over {receiver.config.max_body_bytes} bytes"
            )
        try:
            body = self.rfile.read(int(length))
        except OSError:
            return receiver.refused("rejected", 400, "the body did not arrive")
        if len(body) != int(length):
            return receiver.refused("rejected", 400, "the body is shorter than its length")
        headers = {
            name: value
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
            if (value := self.headers.get(name)) is not None
        }
        return receiver.handle(headers, body)

    def _answer(self, code: int, value: dict[str, object], *, close: bool = False) -> None:
        self._send(code, orjson.dumps(value), "application/json", close=close)

    def _send(self, code: int, body: bytes, content_type: str, *, close: bool = False) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if close:  # an unread body may still be on the wire: do not read it as a request
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], receiver: WebhookReceiver) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.receiver = receiver
        self.slots = threading.BoundedSemaphore(receiver.config.max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.slots.acquire()  # at the cap, new connections wait in the listen backlog
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Called from the handler's except clause: the traceback is the current one.
        log.error("webhook connection failed", exc_info=True, extra={"action": "webhook_error"})  # noqa: LOG014


class WebhookReceiver:
    """Serves the endpoint from a thread; ``start``/``stop``, or a context manager."""

    def __init__(
        self,
        db: Database,
        config: ReceiverConfig,
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.keys = parse_secrets(config.secret.reveal())
        self.store = WebhookStore(db)
        self.metrics = _Metrics()
        self.host = host
        self._requested_port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- one delivery ---------------------------------------------------------------

    def refused(self, outcome: str, code: int, why: str) -> tuple[int, dict[str, object]]:
        self.metrics.deliveries.labels(outcome).inc()
        log.warning("webhook refused: %s", why, extra={"action": "webhook_refused"})
        return code, {"error": why}

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, object]]:
        """Verify, record, act: the answer's status and JSON body."""
        try:
            webhook_id = verify(
                headers,
                body,
                self.keys,
                now=self.clock.now(),
                tolerance=self.config.tolerance_seconds,
            )
            event = parse_event(body)
        except WebhookRejected as exc:
            return self.refused("rejected", 400, str(exc))
        try:
            outcome = self.store.record(webhook_id, event, adopt_unknown=self.config.adopt_unknown)
        except (DatabaseError, SQLAlchemyError) as exc:
            self.metrics.deliveries.labels("unavailable").inc()
            log.warning(
                "webhook not recorded: %s",
                str(exc).splitlines()[0],
                extra={"action": "webhook_unavailable", "webhook_id": webhook_id},
            )
            return 503, {"error": "not recorded; deliver again later"}
        self.metrics.deliveries.labels(outcome.value).inc()
        log.info(
            "webhook %s: %s",
            event.type,
            outcome.value,
            extra={"action": "webhook", "batch_id": event.batch_id, "webhook_id": webhook_id},
        )
        return 200, {"outcome": outcome.value}

    def healthy(self) -> bool:
        try:
            with self.db.transaction() as session:
                session.execute(text("SELECT 1"))
        except (DatabaseError, SQLAlchemyError, OSError):
            return False
        return True

    # --- the server -----------------------------------------------------------------

    def start(self) -> WebhookReceiver:
        if self._httpd is not None:
            raise RuntimeError("the webhook receiver is already running")
        self._httpd = _Server((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="webhooks-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting; requests under way finish (their threads are short-lived)."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the webhook receiver is not running")
        return int(self._httpd.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{PATH}"

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def metrics_report(self) -> dict[str, int]:
        """Deliveries so far, by outcome (for the closing summary)."""
        counts: dict[str, int] = {}
        for metric in self.metrics.deliveries.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["outcome"]] = int(sample.value)
        return counts
