"""An httpx transport with one small connection pool per thread.

httpcore's pool assigns requests to connections under one lock, scanning every
connection each time; with dozens of threads sharing it, that scan and the lock
cost more CPU than the requests themselves (measured: at 64 threads the worker
spent more time there than anywhere else). Each thread sends one request at a
time anyway, so a pool of its own, kept alive across requests, is all it needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

CONNECTIONS_PER_THREAD = 2  # a download and a small call may overlap on one thread


def pooled_transports() -> Callable[[], httpx.BaseTransport]:
    """A factory of small pools sharing one TLS context: building a context loads the
    CA bundle, about 60 ms of CPU, which 32 threads must not each pay."""
    tls = httpx.create_ssl_context()
    limits = httpx.Limits(
        max_connections=CONNECTIONS_PER_THREAD,
        max_keepalive_connections=CONNECTIONS_PER_THREAD,
    )
    return lambda: httpx.HTTPTransport(verify=tls, limits=limits)


class ThreadLocalTransport(httpx.BaseTransport):
    def __init__(self, factory: Callable[[], httpx.BaseTransport] | None = None) -> None:
        self._factory = factory or pooled_transports()
        self._local = threading.local()
        self._all: list[httpx.BaseTransport] = []
        self._lock = threading.Lock()

    def _mine(self) -> httpx.BaseTransport:
        transport: httpx.BaseTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._factory()
            self._local.transport = transport
            with self._lock:
                self._all.append(transport)
        return transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._mine().handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._all = self._all, []
        for transport in transports:
            transport.close()
