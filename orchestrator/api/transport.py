"""An httpx transport with one small connection pool per thread, whose sockets
obey the limits of the call in flight (limits.py).

httpcore's pool assigns requests to connections under one lock, scanning every
connection each time; with dozens of threads sharing it, that scan and the lock
cost more CPU than the requests themselves (measured: at 64 threads the worker
spent more time there than anywhere else). Each thread sends one request at a
time anyway, so a pool of its own, kept alive across requests, is all it needs.

Every socket operation (connect, TLS handshake, read, write) gets a timeout no
longer than what is left of the call's limit, and runs registered with the
call's ``Interrupter`` so that ``abort`` can shut the socket down under it.
That covers what a check between body chunks cannot: headers trickled one byte
at a time, and a thread blocked in a read when SIGTERM arrives.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import httpcore
import httpx

from orchestrator.api.limits import Aborted, CallScope, current_scope

CONNECTIONS_PER_THREAD = 2  # a download and a small call may overlap on one thread

_T = TypeVar("_T")


def _guarded(
    scope: CallScope, sock: socket.socket | None, timeout: float | None, op: Callable[[float], _T]
) -> _T:
    """Run one socket operation under the call's limit; say so when the limit ended it."""
    bounded = scope.timeout(timeout)
    with scope.interrupter.using(sock):
        try:
            result = op(bounded)
        except (httpcore.TimeoutException, httpcore.NetworkError) as exc:
            if scope.interrupter.aborted:
                raise Aborted("the process is stopping") from exc
            if scope.limit.remaining() <= 0:
                raise scope.limit.reached() from exc
            raise
    if scope.interrupter.aborted:  # a shut-down socket reads as a clean end
        raise Aborted("the process is stopping")
    return result


class _GuardedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        scope = current_scope()
        if scope is None:
            return self._inner.read(max_bytes, timeout)
        size = max(max_bytes, scope.read_bytes)
        return _guarded(scope, self._socket, timeout, lambda t: self._inner.read(size, t))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        scope = current_scope()
        if scope is None:
            return self._inner.write(buffer, timeout)
        return _guarded(scope, self._socket, timeout, lambda t: self._inner.write(buffer, t))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        scope = current_scope()
        if scope is None:
            return _GuardedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))
        inner = _guarded(
            scope,
            self._socket,
            timeout,
            lambda t: self._inner.start_tls(ssl_context, server_hostname, t),
        )
        return _GuardedStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, each wrapped in a ``_GuardedStream``."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        scope = current_scope()
        if scope is not None:
            timeout = scope.timeout(timeout)
        try:
            stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        except httpcore.ConnectTimeout as exc:
            if scope is not None and scope.limit.remaining() <= 0:
                raise scope.limit.reached() from exc
            raise
        if scope is not None and scope.interrupter.aborted:
            stream.close()
            raise Aborted("the process is stopping")
        return _GuardedStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        scope = current_scope()
        if scope is not None:
            timeout = scope.timeout(timeout)
        return _GuardedStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with ``GuardedBackend`` underneath."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=verify, limits=limits)
        # httpx takes no network backend, so build its pool again with ours (the
        # attribute has been httpx's pool since 0.18; the transport tests use it).
        self._pool = httpcore.ConnectionPool(
            ssl_context=verify,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(),
        )


def pooled_transports() -> Callable[[], httpx.BaseTransport]:
    """A factory of small pools sharing one TLS context: building a context loads the
    CA bundle, about 60 ms of CPU, which 32 threads must not each pay."""
    tls = httpx.create_ssl_context()
    limits = httpx.Limits(
        max_connections=CONNECTIONS_PER_THREAD,
        max_keepalive_connections=CONNECTIONS_PER_THREAD,
    )
    return lambda: GuardedTransport(verify=tls, limits=limits)


class ThreadLocalTransport(httpx.BaseTransport):
    """A pool per thread that sends through it. A thread that ended has its pool closed
    (its kept-alive sockets with it) and let go when the next thread makes one: threads
    that come and go (a list walk's helpers, one set per walk) would otherwise each leave
    a pool and its open sockets behind for as long as the process runs."""

    def __init__(self, factory: Callable[[], httpx.BaseTransport] | None = None) -> None:
        self._factory = factory or pooled_transports()
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, httpx.BaseTransport]] = []
        self._lock = threading.Lock()

    def _mine(self) -> httpx.BaseTransport:
        transport: httpx.BaseTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._factory()
            self._local.transport = transport
            with self._lock:
                ended = [t for thread, t in self._all if not thread.is_alive()]
                self._all = [(th, t) for th, t in self._all if th.is_alive()]
                self._all.append((threading.current_thread(), transport))
            for pool in ended:  # its thread is gone: nothing else sends through it
                pool.close()
        return transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._mine().handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._all = self._all, []
        for _, transport in transports:
            transport.close()
