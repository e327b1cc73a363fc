"""The async client's network backend: asyncio streams under httpcore's pool.

httpcore's default async backend goes through anyio, whose sockets rebuild a
dictionary of attributes (and call ``getpeername``) each time the pool asks a
connection whether it is still usable, which it does for every connection on
every request: at 32 sends in flight that scan cost more CPU than the sends
(measured: 2.5x the CPU per cancel of the threaded client). Here a stream
answers from what it holds.

Limits stay where they are for the sync client's sockets: every operation has
httpx's timeout, the whole attempt runs under the client's deadline
(``asyncio.timeout``), and ``abort()`` cancels the task, which closes the stream.
Errors become httpcore's, as its own backends raise them, so httpx maps them.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["AsyncioBackend", "asyncio_transport"]


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()  # not waited for: a dead peer must not hold up a close

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            self._writer.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            self._writer.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked of an idle connection: readable means the server closed it (or sent
            # something unasked); either way it must not be used again.
            return self._reader.at_eof() or self._writer.is_closing() or _buffered(self._reader)
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


def _buffered(reader: asyncio.StreamReader) -> bool:
    return bool(getattr(reader, "_buffer", b""))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return _Stream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _Stream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _AsyncTransport(httpx.AsyncHTTPTransport):
    """httpx's async transport with ``AsyncioBackend`` underneath."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=verify, limits=limits)
        # As GuardedTransport does (transport.py): httpx takes no network backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(),
        )


class _GivenBack(httpx.AsyncByteStream):
    """A response body that gives its connection back to the pool once closed."""

    def __init__(self, inner: httpx.AsyncByteStream, give_back: Callable[[], None]) -> None:
        self._inner = inner
        self._give_back: Callable[[], None] | None = give_back

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            give_back, self._give_back = self._give_back, None
            if give_back is not None:  # once, however often it is closed
                give_back()


class _Connections(httpx.AsyncBaseTransport):
    """Up to ``size`` one-connection pools, each lent to one request at a time.

    httpcore's pool checks every connection it holds, for every request, with a
    scan inside a scan (its surplus-idle check counts the idle connections once per
    connection): at 32 connections that is about 1,000 calls per request. A pool
    of one connection makes that check trivial, as the sync client's pool per
    thread does (transport.py)."""

    def __init__(self, make: Callable[[], httpx.AsyncBaseTransport], size: int) -> None:
        self._make = make
        self._size = size
        self._made: list[httpx.AsyncBaseTransport] = []
        self._free: list[httpx.AsyncBaseTransport] = []
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def _lend(self) -> httpx.AsyncBaseTransport:
        while not self._free:
            if len(self._made) < self._size:
                self._made.append(self._make())
                return self._made[-1]
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
        return self._free.pop()

    def _give_back(self, transport: httpx.AsyncBaseTransport) -> None:
        self._free.append(transport)
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = await self._lend()
        try:
            response = await transport.handle_async_request(request)
        except BaseException:
            self._give_back(transport)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _GivenBack(response.stream, lambda: self._give_back(transport))
        return response

    async def aclose(self) -> None:
        made, self._made, self._free = self._made, [], []
        for transport in made:
            await transport.aclose()


def asyncio_transport(verify: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """At most ``limits.max_connections`` connections, kept alive, on asyncio streams."""
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    size = limits.max_connections or 1
    return _Connections(lambda: _AsyncTransport(verify=verify, limits=one), size)
