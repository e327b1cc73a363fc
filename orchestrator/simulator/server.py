"""The HTTP front of the simulator: keep-alive HTTP/1.1 with raw control of the socket.

Responses are written by hand (status line, headers and body in one send) so that
faults can stop anywhere: before the status line, or in the middle of a body whose
Content-Length promised more.
"""

from __future__ import annotations

import contextlib
import hmac
import socket
import sys
import threading
import time
import traceback
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from .api import Dispatcher
from .errors import HttpError
from .faults import FaultRule, fault_error, fault_headers, html_page
from .files import FileContent
from .routes import Route, resolve
from .state import Simulator
from .wire import Reply, read_body

IDLE_TIMEOUT_S = 300.0
_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def _masked(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) > 10 else "***"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.simulator.config.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        request_id = "req_" + uuid.uuid4().hex
        try:
            self._serve(request_id)
        except OSError:  # the client went away mid-response
            self.close_connection = True
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            error = HttpError(500, "The simulator failed on this request.", type_="server_error")
            with contextlib.suppress(OSError):
                self._send(Reply.error(error), request_id)

    def _serve(self, request_id: str) -> None:
        url = urlsplit(self.path)
        route = resolve(self.command, url.path)
        try:
            body = read_body(self.rfile, self.headers)
        except HttpError as exc:
            self.close_connection = True
            self._send(Reply.error(exc), request_id)
            return
        if route is None:
            error = HttpError(404, f"Invalid URL ({self.command} {url.path})")
            self._send(Reply.error(error), request_id)
            return
        auth_error = self._auth_error()
        if route.control:  # control requests are neither counted nor faulted
            if auth_error is not None:
                self._send(Reply.error(auth_error), request_id)
            else:
                self._send(self._dispatch(route, url.query, body), request_id)
            return
        self._serve_api(route, url.query, body, auth_error, request_id)

    def _serve_api(
        self, route: Route, query: str, body: bytes, auth_error: HttpError | None, request_id: str
    ) -> None:
        simulator = self.server.simulator
        fault = simulator.on_request(
            route.endpoint,
            route.batch_id,
            route.file_id,
            authorized=auth_error is None,
            key=simulator.config.api_key,  # the one key it accepts: one bucket
        )
        if auth_error is not None:
            self._send(Reply.error(auth_error), request_id)
            return
        try:
            reply, cut = self._answer(route, query, body, fault)
        finally:
            # A cancel is in flight from arrival until its answer is ready to send.
            if route.endpoint == "cancel" and route.batch_id is not None:
                simulator.cancel_finished(route.batch_id)
        if reply is None:  # drop_before: close without a word
            self.close_connection = True
            return
        self._send(reply, request_id, cut=cut)

    def _answer(
        self, route: Route, query: str, body: bytes, fault: FaultRule | None
    ) -> tuple[Reply | None, float | None]:
        """The reply and the share of its body to send (None: all of it)."""
        if fault is None:
            return self._dispatch(route, query, body), None
        if fault.kind == "drop_before":
            return None, None
        if fault.kind == "status":
            error = orjson.dumps(fault_error(fault))
            return Reply(fault.http_status, error, headers=fault_headers(fault)), None
        if fault.kind == "html":
            page = html_page(fault.http_status)
            html = "text/html; charset=utf-8"
            return Reply(fault.http_status, page, html, fault_headers(fault)), None
        if fault.kind == "slow":
            time.sleep(fault.delay_s)
            return self._dispatch(route, query, body), None
        # drop_mid / truncate: the work is done, the client never sees the whole answer.
        return self._dispatch(route, query, body), fault.fraction

    def _dispatch(self, route: Route, query: str, body: bytes) -> Reply:
        content_type = self.headers.get("Content-Type") or ""
        try:
            return self.server.dispatcher.dispatch(route, parse_qs(query), content_type, body)
        except HttpError as exc:
            return Reply.error(exc)

    def _auth_error(self) -> HttpError | None:
        expected = self.server.simulator.config.api_key.encode()
        presented: list[str] = []
        authorization = self.headers.get("Authorization") or ""
        if authorization[:7].lower() == "bearer ":
            presented.append(authorization[7:].strip())
        azure_key = self.headers.get("api-key")
        if azure_key:
            presented.append(azure_key.strip())
        if any(hmac.compare_digest(key.encode(), expected) for key in presented):
            return None
        message = _MISSING_KEY
        if presented:
            message = (
                f"Incorrect API key provided: {_masked(presented[0])}. "
                "You can find your API key at https://platform.openai.com/account/api-keys."
            )
        return HttpError(401, message, code="invalid_api_key")

    def _send(self, reply: Reply, request_id: str, *, cut: float | None = None) -> None:
        """Write the reply; with ``cut``, only that share of the body, then close."""
        content = reply.body
        length = len(content) if isinstance(content, bytes) else content.size()
        try:
            phrase = HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = "Status"
        lines = [
            f"HTTP/1.1 {reply.status} {phrase}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {length}",
            f"x-request-id: {request_id}",
            *(f"{name}: {value}" for name, value in reply.headers),
        ]
        if cut is not None:
            self.close_connection = True
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        limit = length if cut is None else int(length * cut)
        if isinstance(content, bytes):
            self.wfile.write(head + content[:limit])
        else:
            self.wfile.write(head)
            _stream(self.wfile.write, content, limit)
        if self.server.simulator.config.verbose:
            self.log_message('"%s" %s %s', self.requestline, reply.status, length)


def _stream(write: Any, content: FileContent, limit: int) -> None:
    sent = 0
    for chunk in content.chunks():
        if sent + len(chunk) >= limit:
            write(chunk[: limit - sent])
            return
        write(chunk)
        sent += len(chunk)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.dispatcher = Dispatcher(simulator)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can be slow.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.simulator.config.verbose:
            super().handle_error(request, client_address)


class SimulatorServer:
    """Serves a ``Simulator`` over HTTP from a daemon thread; a context manager."""

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self.host = host
        self._requested_port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SimulatorServer:
        if self._httpd is not None:
            raise RuntimeError("the simulator server is already running")
        self._httpd = _HTTPServer((self.host, self._requested_port), self.simulator)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="simulator-http",
            daemon=True,
        )
        self._thread.start()
        webhooks = self.simulator.webhooks
        if webhooks is not None and self.simulator.config.webhook_thread:
            webhooks.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        if self.simulator.webhooks is not None:
            self.simulator.webhooks.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the simulator server is not running")
        return self._httpd.server_port

    @property
    def root_url(self) -> str:
        """``http://host:port`` (the Azure endpoint; control endpoints live under /_sim/)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL, ``http://host:port/v1``."""
        return self.root_url + "/v1"

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
