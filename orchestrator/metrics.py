"""Prometheus metrics, on a registry each process owns (never the global default).

Two kinds:

- What this process did, counted as it happens: API requests by endpoint and
  HTTP status, retries, request durations. ``MeteredTransport`` counts them
  below the API client, so the client needs no hooks: pass
  ``metrics.transport()`` to ``build_client``. The reconciler counts the
  results and bytes it ingests with ``observe_ingested``.
- What the database says, read when Prometheus scrapes (``DatabaseCollector``):
  batches by status, overdue batches, cancel requests by state, results stored,
  result bytes downloaded, whether sending is paused, harvests by state, the
  oldest unharvested end, file deletions by state. These describe the whole
  fleet, so every process that serves metrics reports the same values:
  aggregate them with ``max``, not ``sum``.
- This process's loop heartbeat (``orchestrator.probes``), and on the same port
  ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.api.answers import HeadAnswer
from orchestrator.api.async_transport import AnswerBody, Exchanger, LeanRequest
from orchestrator.api.http11 import Head
from orchestrator.api.limits import Aborted, LimitReached
from orchestrator.api.transport import ThreadLocalTransport
from orchestrator.clock import utcnow
from orchestrator.core.retry_policy import VerdictKind, classify
from orchestrator.db.database import Database
from orchestrator.db.queries import OperatorQueries
from orchestrator.db.server_clock import database_clock
from orchestrator.db.upkeep import upkeep_snapshot
from orchestrator.errors import ConfigError, DatabaseError
from orchestrator.probes import Heartbeat, HeartbeatCollector, Probes, Readiness, probe_app
from orchestrator.settings import Settings

__all__ = [
    "AsyncMeteredTransport",
    "DatabaseCollector",
    "MeteredTransport",
    "Metrics",
    "MetricsServer",
    "endpoint_of",
    "serve_metrics",
    "start_process_metrics",
]

log = logging.getLogger(__name__)
_A = TypeVar("_A")
_R = TypeVar("_R")
_Sent = tuple[_A, int, Callable[[], Mapping[str, str]]]  # the answer, its status, its headers
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# The label is the API operation, never the raw path: ids in a label would make a
# new time series per batch.
_ENDPOINTS = (
    (re.compile(r"/batches/[^/]+/cancel$"), "cancel"),
    (re.compile(r"/batches/[^/]+$"), "retrieve"),
    (re.compile(r"/batches$"), "list"),
    (re.compile(r"/files/[^/]+/content$"), "download"),
    (re.compile(r"/files/[^/]+$"), "file"),
)


# A request that went out and got no answer, as the client's transports end one: a
# network failure, the call's deadline (LimitReached; the async lean exchange's own is
# TimeoutError, asyncio.timeout's a CancelledError inside it) or abort() (Aborted, or
# the task cancelled). All are counted as transport_error, the code the documented
# alert watches: a trickling server cut at api_deadline is the failure it is for.
_NO_ANSWER = (httpx.TransportError, LimitReached, Aborted)


def _asks_retry(status: int, headers: Callable[[], Mapping[str, str]]) -> bool:
    """Will the client send this request again? A 2xx never asks (its body, which only
    the client reads, may; that retry is not counted); other answers, as classified."""
    if 200 <= status < 300:
        return False
    return classify(status, headers(), utcnow()).kind is VerdictKind.RETRY


def endpoint_of(request: httpx.Request) -> str:
    return _endpoint(request.method, request.url.path)


def _endpoint(method: str, path: str) -> str:
    path = path.rstrip("/")
    for pattern, name in _ENDPOINTS:
        if pattern.search(path):
            if name == "list" and method == "POST":
                return "create"
            if name == "file":
                return "delete_file" if method == "DELETE" else "retrieve_file"
            return name
    return "other"


class Metrics:
    """This process's counters, and the registry the HTTP endpoint serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "orchestrator_api_requests",
            "Batch API requests sent, by operation and HTTP status (or transport_error).",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.retries = Counter(
            "orchestrator_api_retries",
            "Batch API requests that repeat one that failed in a retryable way.",
            ["endpoint"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "orchestrator_api_request_duration_seconds",
            "Time to the response headers of a Batch API request.",
            ["endpoint"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ingested_results = Counter(
            "orchestrator_ingested_results",
            "Result rows this process stored, by file kind.",
            ["kind"],
            registry=self.registry,
        )
        self._counters: dict[tuple[str, int | str], Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self.ingested_bytes = Counter(
            "orchestrator_ingested_bytes",
            "Bytes of result files this process downloaded, by file kind.",
            ["kind"],
            registry=self.registry,
        )

    @staticmethod
    def for_database(db: Database) -> Metrics:
        """Process counters plus the fleet's state, read from ``db`` on each scrape."""
        metrics = Metrics()
        metrics.registry.register(DatabaseCollector(db))
        return metrics

    # --- hooks ------------------------------------------------------------------------

    def observe_response(
        self, endpoint: str, status: int | str, seconds: float | None = None
    ) -> None:
        # The labelled children, kept: ``labels()`` costs more than the count itself.
        counter = self._counters.get((endpoint, status))
        if counter is None:
            counter = self.requests.labels(endpoint=endpoint, code=str(status))
            self._counters[(endpoint, status)] = counter
        counter.inc()
        if seconds is not None:
            histogram = self._histograms.get(endpoint)
            if histogram is None:
                histogram = self._histograms[endpoint] = self.durations.labels(endpoint=endpoint)
            histogram.observe(seconds)

    def observe_retry(self, endpoint: str) -> None:
        self.retries.labels(endpoint=endpoint).inc()

    def observe_ingested(self, kind: str, *, results: int, bytes_read: int) -> None:
        self.ingested_results.labels(kind=kind).inc(results)
        self.ingested_bytes.labels(kind=kind).inc(bytes_read)

    def metered(self, inner: httpx.AsyncBaseTransport) -> AsyncMeteredTransport:
        """``inner`` (the async client's pool), counting every request."""
        return AsyncMeteredTransport(inner, self)

    def transport(self) -> MeteredTransport:
        """The client's own kind of transport (a pool per thread), counting every request."""
        return MeteredTransport(ThreadLocalTransport(), self)


class MeteredTransport(httpx.BaseTransport):
    """Counts each request the client sends, and which of them are retries.

    A retry is recognised without help from the client: the client retries on
    the thread that made the failed attempt, so a request that repeats the
    previous request of its thread (same method and path) after a retryable
    failure (by the client's own rules) is one.
    """

    def __init__(self, inner: httpx.BaseTransport, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._last = threading.local()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = endpoint_of(request)
        key = (request.method, request.url.path)
        if getattr(self._last, "failed", None) == key:
            self._metrics.observe_retry(endpoint)
        started = time.perf_counter()
        try:
            response = self._inner.handle_request(request)
        except _NO_ANSWER:
            self._last.failed = key
            self._metrics.observe_response(endpoint, "transport_error")
            raise
        self._last.failed = (
            key if _asks_retry(response.status_code, lambda: response.headers) else None
        )
        self._metrics.observe_response(
            endpoint, response.status_code, time.perf_counter() - started
        )
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncMeteredTransport(httpx.AsyncBaseTransport):
    """``MeteredTransport`` for the async client (the worker's sender). Each call runs in
    a task of its own and retries in it, so "the previous request" is the task's
    (a context variable), as it is the thread's for the sync client. Around a pool that
    takes requests as bytes (``Exchanger``) it does too, counting them alike."""

    def __init__(self, inner: httpx.AsyncBaseTransport, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._exchanger = inner if isinstance(inner, Exchanger) and inner.exchanges else None

    @property
    def exchanges(self) -> bool:
        return self._exchanger is not None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._metered(
            request.method, request.url.path, endpoint_of(request), self._respond, request
        )

    async def exchange(self, request: LeanRequest) -> tuple[Head, AnswerBody]:
        if self._exchanger is None:
            raise TypeError(f"{self._inner!r} takes no request as bytes")
        endpoint = _endpoint(request.method, request.path)
        return await self._metered(request.method, request.path, endpoint, self._exchange, request)

    async def _respond(self, request: httpx.Request) -> _Sent[httpx.Response]:
        response = await self._inner.handle_async_request(request)
        return response, response.status_code, lambda: response.headers

    async def _exchange(self, request: LeanRequest) -> _Sent[tuple[Head, AnswerBody]]:
        assert self._exchanger is not None
        head, body = await self._exchanger.exchange(request)
        return (head, body), head.status, lambda: HeadAnswer(head).headers

    async def _metered(
        self,
        method: str,
        path: str,
        endpoint: str,
        send: Callable[[_R], Awaitable[_Sent[_A]]],
        request: _R,
    ) -> _A:
        key = (method, path)
        if _last_failed.get() == key:
            self._metrics.observe_retry(endpoint)
        started = time.perf_counter()
        try:
            answer, status, headers = await send(request)
        except (*_NO_ANSWER, TimeoutError, asyncio.CancelledError):
            _last_failed.set(key)
            self._metrics.observe_response(endpoint, "transport_error")
            raise
        _last_failed.set(key if _asks_retry(status, headers) else None)
        self._metrics.observe_response(endpoint, status, time.perf_counter() - started)
        return answer

    async def aclose(self) -> None:
        await self._inner.aclose()


_last_failed: ContextVar[tuple[str, str] | None] = ContextVar("metrics_last_failed", default=None)


class DatabaseCollector(Collector):
    """The fleet's state, queried when scraped. A database that cannot answer gives
    ``orchestrator_database_up 0`` and nothing else, rather than a failed scrape."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queries = OperatorQueries(db)
        self._clock = database_clock(db)  # a pause's end and overdue times are the server's

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "orchestrator_database_up", "1 if the database answered this scrape."
        )
        try:
            snapshot = self._queries.snapshot(self._clock.now())
            upkeep = upkeep_snapshot(self._db)
        except (DatabaseError, SQLAlchemyError) as exc:  # a scrape must answer regardless
            log.warning("metrics: the database did not answer: %s", str(exc).splitlines()[0])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        batches = GaugeMetricFamily(
            "orchestrator_batches", "Tracked batches by status.", labels=["status"]
        )
        for status, n in sorted(snapshot.batches_by_status.items()):
            batches.add_metric([status], n)
        yield batches
        yield GaugeMetricFamily(
            "orchestrator_batches_overdue",
            "Batches in cancelling or finalizing for longer than the overdue limit.",
            value=snapshot.overdue,
        )
        cancels = GaugeMetricFamily(
            "orchestrator_cancel_requests", "Cancel requests by state.", labels=["state"]
        )
        for state, n in sorted(snapshot.cancels_by_state.items()):
            cancels.add_metric([state], n)
        yield cancels
        yield GaugeMetricFamily(
            "orchestrator_results_stored",
            "Result rows stored, across every batch.",
            value=snapshot.results_stored,
        )
        yield GaugeMetricFamily(
            "orchestrator_result_line_errors",
            "Unreadable result lines kept verbatim, across every batch.",
            value=snapshot.result_line_errors,
        )
        yield GaugeMetricFamily(
            "orchestrator_result_bytes",
            "Bytes of result files downloaded in full.",
            value=snapshot.result_bytes,
        )
        yield GaugeMetricFamily(
            "orchestrator_sending_paused",
            "1 while all cancel sending is paused (the API refused the key).",
            value=1 if snapshot.pause is not None else 0,
        )
        harvests = GaugeMetricFamily(
            "orchestrator_harvests",
            "Batches by harvest state (waiting, pending, done, missing, retrying).",
            labels=["state"],
        )
        for state, n in sorted(upkeep.harvests_by_state.items()):
            harvests.add_metric([state], n)
        yield harvests
        oldest = GaugeMetricFamily(
            "orchestrator_oldest_unharvested_end_timestamp_seconds",
            "When the ended batch that has waited longest for its harvest ended (Unix time; "
            "no sample while none waits). Its files expire, by default 30 days after that.",
        )
        if upkeep.oldest_unharvested_end is not None:
            oldest.add_metric([], upkeep.oldest_unharvested_end.timestamp())
        yield oldest
        deletions = GaugeMetricFamily(
            "orchestrator_file_deletions",
            "API files queued for deletion after their harvest, by state.",
            labels=["state"],
        )
        for state, n in sorted(upkeep.deletions_by_state.items()):
            deletions.add_metric([state], n)
        yield deletions


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


def serve_metrics(
    settings: Settings, registry: CollectorRegistry, probes: Probes | None = None
) -> MetricsServer | None:
    """Serve ``GET /metrics`` (and ``/healthz``, ``/readyz`` with ``probes``) on
    ``settings.metrics_address``:``metrics_port`` (port 0: any free port) in a daemon
    thread; nothing when the port is not set."""
    if settings.metrics_port is None:
        return None
    addr = settings.metrics_address
    app = probe_app(make_wsgi_app(registry), probes)
    try:
        family = socket.getaddrinfo(addr, settings.metrics_port)[0][0]
        server_class = type("MetricsWSGIServer", (_Server,), {"address_family": family})
        server: WSGIServer = make_server(
            addr, settings.metrics_port, app, server_class, handler_class=_QuietHandler
        )
    except OSError as exc:  # in use, not an address of this host, a name that resolves nowhere
        raise ConfigError(
            f"cannot serve metrics on {addr}:{settings.metrics_port} ({exc.strerror or exc}); "
            "check ORCHESTRATOR_METRICS_ADDRESS and ORCHESTRATOR_METRICS_PORT"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    served = MetricsServer(server, thread)
    log.info("metrics on http://%s:%d/metrics", addr, served.port, extra={"action": "metrics"})
    return served


def start_process_metrics(
    settings: Settings,
    db: Database,
    *,
    heartbeat: Heartbeat | None = None,
    process: str = "process",
) -> tuple[Metrics, MetricsServer | None]:
    """A long-running process's metrics: its own counters, its loop's ``heartbeat``,
    and the fleet's state from ``db``; with ``/healthz`` and ``/readyz``, served when
    ``settings.metrics_port`` is set. The server thread is a daemon: it ends with the
    process."""
    metrics = Metrics.for_database(db)
    if heartbeat is not None:
        metrics.registry.register(HeartbeatCollector(heartbeat, process))
    readiness = Readiness(db, clock=heartbeat.clock if heartbeat is not None else None)
    probes = Probes(heartbeat, readiness)
    return metrics, serve_metrics(settings, metrics.registry, probes)
