"""The webhook receiver: ``POST /webhooks/openai``, verified, recorded, answered at once.

For each delivery: refuse a body longer than the cap before reading it, verify the
Standard Webhooks signature (``core/webhooks.py``), read the batch id, then record
the event and make the batch due in one transaction (``db/webhooks.py``), and only
then answer 2xx. A redelivery finds its row and is acknowledged without acting
again. Anything refused gets a 4xx (the sender's retry cannot make it valid); a
database problem gets a 503, so the sender delivers it again later.

Plain ``http.server`` with one thread per connection, at most ``max_connections``
at once: the work per request is one small transaction, and no framework is needed.
A connection holds its slot only briefly: each request must arrive whole within
``request_seconds`` and a kept-alive connection may idle ``idle_seconds``; when every
slot is taken a new connection gets a 503 (``busy``) rather than a wait without end.
``GET /healthz`` answers whether the database does; ``GET /metrics`` is Prometheus.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
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
# The time one request (request line, headers and body) has to arrive, from its first
# byte; then the connection is closed. The per-recv() socket timeout alone let a client
# keep its slot for ever by sending a header line every few seconds. A real delivery is
# a few hundred bytes of headers and a JSON body under a kilobyte; even a body at the
# 1 MiB cap arrives in 10 s at 1 Mbit/s. The sender delivers again after a failure.
REQUEST_SECONDS = 10.0
# How long a kept-alive connection may sit between requests (or a new one before its
# first byte): it holds a slot all that time.
IDLE_SECONDS = 5.0
# How long the accept loop waits for a free slot before answering 503. It must be short:
# serve_forever() runs that wait, and stop() (httpd.shutdown()) waits for serve_forever().
SLOT_WAIT_SECONDS = 0.5
# An answer is written with this timeout, whatever the request's deadline left.
WRITE_TIMEOUT_S = 10.0
# Content-Length as ASCII digits, at most 12 (str.isdigit() also takes '²' and 5000
# digits, which int() then refuses); anything longer is over any cap anyway.
_LENGTH = re.compile(r"[0-9]{1,12}")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True, kw_only=True)
class ReceiverConfig:
    secret: Secret
    max_body_bytes: int = 1_048_576
    tolerance_seconds: int = 300
    adopt_unknown: bool = False
    max_connections: int = 64
    request_seconds: float = REQUEST_SECONDS
    idle_seconds: float = IDLE_SECONDS

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
            "duplicate, rejected, too_large, unavailable, busy).",
            ["outcome"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "orchestrator_webhook_handling_seconds",
            "Time from a delivery's headers to our answer.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )


class _DeadlineSocketReader(io.RawIOBase):
    """The connection's socket, each recv() bounded by the time left to ``deadline``.

    A socket timeout bounds one recv(); this bounds them all together, so a client
    trickling bytes runs out of time just as one sending nothing does.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:  # settimeout(0) would mean "do not wait", not "too late"
            raise TimeoutError("the request took too long to arrive")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = WRITE_TIMEOUT_S
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by one that keeps the request's deadline
        self.reader = _DeadlineSocketReader(self.connection)
        self.buffered = io.BufferedReader(self.reader)
        self.rfile = self.buffered

    def handle_one_request(self) -> None:
        config = self.server.receiver.config
        # Before a request's first byte the connection is idle, holding a slot: not long.
        self.reader.deadline = time.monotonic() + config.idle_seconds
        try:
            waiting = self.buffered.peek(1)  # no recv() if a request is already buffered
        except OSError:  # idle too long (TimeoutError), or reset
            waiting = b""
        if not waiting:
            self.close_connection = True
            return
        # From its first byte, the whole request has request_seconds. The base class
        # closes the connection on a TimeoutError in the request line or the headers;
        # _deliver answers 400 to one in the body.
        self.reader.deadline = time.monotonic() + config.request_seconds
        super().handle_one_request()

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
        # Where the body ends must be beyond doubt (request smuggling): one length, no
        # Transfer-Encoding beside it or instead of it.
        if "transfer-encoding" in self.headers:
            return receiver.refused(
                "rejected", 400, "Transfer-Encoding is not accepted; send a Content-Length"
            )
        lengths = {value.strip(" \t") for value in self.headers.get_all("content-length", [])}
        if not lengths:
            return receiver.refused("rejected", 411, "a Content-Length is required")
        if len(lengths) > 1:
            return receiver.refused("rejected", 400, "Content-Length headers that differ")
        (length_text,) = lengths
        if not _LENGTH.fullmatch(length_text):
            return receiver.refused(
                "rejected", 400, "Content-Length is not a number of bytes (0-9, at most 12)"
            )
        length = int(length_text)
        if length > receiver.config.max_body_bytes:
            return receiver.refused(
                "too_large", 413, f"body over {receiver.config.max_body_bytes} bytes"
            )
        try:
            body = self.rfile.read(length)
        except OSError:  # a TimeoutError: the deadline passed, or a reset
            return receiver.refused("rejected", 400, "the body did not arrive")
        if len(body) != length:
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
            self.connection.settimeout(WRITE_TIMEOUT_S)  # not what the read deadline left
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
        # This runs in serve_forever(): waiting here for ever would also stop shutdown().
        if not self.slots.acquire(timeout=SLOT_WAIT_SECONDS):
            self._refuse_busy(request)
            return
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

    def _refuse_busy(self, request: socket.socket) -> None:
        """Answer 503 and close, without ever waiting on this client."""
        limit = self.receiver.config.max_connections
        _, answer = self.receiver.refused("busy", 503, f"all {limit} connections busy")
        body = orjson.dumps(answer)
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        request.setblocking(False)
        with contextlib.suppress(OSError):
            # Take what the client already sent: closing with unread bytes sends a reset,
            # which can destroy the answer before the client reads it.
            request.recv(65536)
        with contextlib.suppress(OSError):
            request.send(head.encode() + body)  # small: fits the empty send buffer
        self.shutdown_request(request)

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
