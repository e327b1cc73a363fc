"""The async client's network layer: HTTP/1.1 on asyncio Protocols, kept alive.

The worker sends thousands of small exchanges (a POST, a JSON answer of a few
hundred bytes). Through httpx's transport, httpcore's pool and h11 each one
built a dozen event and state objects and crossed asyncio streams a few times:
more CPU per cancel than everything else the worker does (docs/benchmarks.md,
"Cancel fan-out"). Here a connection is an ``asyncio.Protocol`` that writes the
request in one call and parses the answer where it arrives (``data_received``,
with the parser of http11.py, which bounds and checks it), handing the body to
the reader a piece at a time.

It keeps every limit the httpcore path had, and the client's on top:

- the body is streamed, never held here beyond ``_PAUSE_ABOVE`` bytes (reading
  from the socket pauses until the reader catches up), so the caller's cap and
  gzip guard (bodies.read_capped_async) decide how much is ever read;
- every wait for the server has httpx's timeouts (connect, read: between any two
  pieces), and the client runs the whole attempt under its deadline; a cancelled
  wait (the deadline, ``abort()``) closes the connection;
- a body cut short is an error, never a short answer; bytes nobody asked for end
  the connection;
- errors are httpx's (ConnectError, ReadTimeout, RemoteProtocolError, ...), as
  httpx's own transport raises them, so the client classifies them unchanged.

A connection is reused only after an answer read to its end with keep-alive, and
not once it has sat idle ``KEEPALIVE_SECONDS``.

Two doors into the same pool: httpx's ``handle_async_request`` (an ``httpx.Request``
in, an ``httpx.Response`` out), and ``exchange``: a ``LeanRequest`` already in its
wire bytes in, the answer's ``Head`` and ``AnswerBody`` out, with no httpx object
built on the way (the worker's cancels: building them was a third of the sender's
CPU; docs/benchmarks.md, "third pass").
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol, runtime_checkable

import httpx

from orchestrator.api.http11 import AnswerParser, Head, serialize

__all__ = [
    "KEEPALIVE_SECONDS",
    "AnswerBody",
    "Exchanger",
    "LeanRequest",
    "LeanTransport",
    "Origin",
    "asyncio_transport",
]

Origin = tuple[bytes, bytes, int]  # scheme, host, port: the pool's key

KEEPALIVE_SECONDS = 5.0  # an idle connection older than this is closed, not reused
_PAUSE_ABOVE = 1 << 20  # body bytes buffered for the reader before reading pauses


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self._loop = loop
        self.origin = origin  # the pool's key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False  # an exchange is under way (its answer not fully read)
        self.reusable = False  # the last answer was read to its end, keep-alive
        self.idle_since = 0.0
        self._answer = AnswerParser(b"GET")
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and self._error is None:
            try:
                self._answer.closed()
            except httpx.RemoteProtocolError as cut:
                self._error = httpx.ReadError(str(exc)) if exc is not None else cut
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost says the rest

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # nothing asked: the connection is done
            self._fail(httpx.RemoteProtocolError("the server sent bytes nobody asked for"))
            return
        try:
            pieces = self._answer.feed(data)
        except httpx.RemoteProtocolError as exc:
            self._fail(exc)
            return
        for piece in pieces:
            self._pieces.append(piece)
            self._buffered += len(piece)
        if self._buffered > _PAUSE_ABOVE and not self._paused and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def _fail(self, exc: Exception) -> None:
        if self._error is None and not self._answer.complete:
            self._error = exc
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the transport's side ------------------------------------------------------

    def start(self, request: bytes, method: bytes) -> None:
        """Send one request; the answer is parsed as it arrives."""
        assert self.transport is not None and not self.busy
        self.busy = True
        self.reusable = False
        self._answer = AnswerParser(method)
        self._pieces.clear()
        self._buffered = 0
        self._error = None
        self.transport.write(request)

    async def _wait(self, timeout: float | None, deadline: float | None) -> None:
        """Until something arrives (or the connection ends), at most ``timeout``
        (``httpx.ReadTimeout``), and not past ``deadline``, a time of the loop's clock
        (``TimeoutError``, as ``asyncio.timeout`` would raise): one timer for both."""
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer: asyncio.TimerHandle | None = None
        at = None if timeout is None else self._loop.time() + timeout
        if deadline is not None and (at is None or deadline < at):
            timer = self._loop.call_at(deadline, _expire, waiter, None)
        elif at is not None:
            timer = self._loop.call_at(at, _expire, waiter, timeout)
        try:
            await waiter
        except BaseException:  # a timeout, the attempt's deadline, abort(): unusable now
            self.close()
            raise
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def head(self, timeout: float | None, deadline: float | None = None) -> Head:
        while self._answer.head is None:
            if self._error is not None:
                raise self._error
            if self.closed:
                raise httpx.RemoteProtocolError("the server closed the connection unanswered")
            await self._wait(timeout, deadline)
        return self._answer.head

    async def pieces(
        self, timeout: float | None, deadline: float | None = None
    ) -> AsyncIterator[bytes]:
        while True:
            while self._pieces:
                piece = self._pieces.popleft()
                self._buffered -= len(piece)
                if self._paused and self._buffered <= _PAUSE_ABOVE // 2:
                    self._paused = False
                    if self.transport is not None and not self.closed:
                        self.transport.resume_reading()
                yield piece
            if self._error is not None:
                raise self._error
            if self._answer.complete:
                return
            if self.closed:
                raise httpx.RemoteProtocolError("the connection closed mid-answer")
            await self._wait(timeout, deadline)

    def finish(self, now: float) -> None:
        """The reader is done with the answer: keep the connection if it may be reused."""
        self.busy = False
        answer = self._answer
        self.reusable = (
            answer.complete and self._error is None and answer.keep_alive and not self.closed
        )
        if self.reusable:
            self.idle_since = now
        else:
            self.close()

    def close(self) -> None:
        self.reusable = False
        self.closed = True
        if self.transport is not None:
            self.transport.close()  # not waited for: a dead peer must not hold up a close


def _expire(waiter: asyncio.Future[None], timeout: float | None) -> None:
    """The read timeout passed (``timeout``), or the deadline (None)."""
    if not waiter.done():
        if timeout is None:
            waiter.set_exception(TimeoutError())
        else:
            waiter.set_exception(httpx.ReadTimeout(f"no data from the server for {timeout:g}s"))


class AnswerBody(httpx.AsyncByteStream):
    """An answer's body as it arrives; closing it gives the connection back (or closes
    it, when the body was not read to its end)."""

    def __init__(
        self,
        transport: LeanTransport,
        conn: _Connection,
        timeout: float | None,
        deadline: float | None = None,
    ) -> None:
        self._transport = transport
        self._conn: _Connection | None = conn
        self._timeout = timeout
        self._deadline = deadline

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        async for piece in conn.pieces(self._timeout, self._deadline):
            yield piece

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:  # once, however often it is closed
            self._transport.give_back(conn)


class LeanRequest:
    """A request already in its wire bytes (``data``), with where it goes and httpx's
    timeouts for it; ``method`` and ``path`` say what it is (for metrics). With a
    ``deadline`` (a time of the event loop's clock), no wait of the exchange, reading
    the body included, lasts past it: ``TimeoutError`` then, as ``asyncio.timeout``
    around it all would raise, at the cost of no timer of its own."""

    __slots__ = ("connect", "data", "deadline", "method", "origin", "path", "pool", "read")

    def __init__(
        self,
        method: str,
        path: str,
        data: bytes,
        origin: Origin,
        *,
        connect: float | None,
        read: float | None,
        pool: float | None,
        deadline: float | None = None,
    ) -> None:
        self.deadline = deadline
        self.method = method
        self.path = path
        self.data = data
        self.origin = origin
        self.connect = connect
        self.read = read
        self.pool = pool


@runtime_checkable
class Exchanger(Protocol):
    """A pool that takes a ``LeanRequest`` (``exchanges`` False: it only passes
    httpx's requests on, e.g. a wrapper around another kind of transport)."""

    @property
    def exchanges(self) -> bool: ...

    async def exchange(self, request: LeanRequest) -> tuple[Head, AnswerBody]: ...


class LeanTransport(httpx.AsyncBaseTransport):
    """Up to ``max_connections`` kept-alive connections per origin, one exchange each
    at a time; a request finding none free waits (httpx's pool timeout)."""

    exchanges = True

    def __init__(
        self,
        ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None,
        max_connections: int,
    ) -> None:
        # A context, or what makes one on the first https connection: building one
        # (CA bundle and all) costs ~20-60 ms of CPU that a plain-http origin never needs.
        self._ssl = ssl_context
        self._max = max(1, max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0  # connections made and not yet closed or dropped
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._all: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}", request=request)
        port = url.port or (443 if scheme == b"https" else 80)
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        body = await request.aread()
        data = serialize(request, body)
        head, stream = await self._send(
            (scheme, url.raw_host, port),
            data,
            request.method.encode("ascii"),
            timeouts.get("connect"),
            read_timeout,
            timeouts.get("pool"),
            request,
        )
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=stream,
            extensions={"http_version": head.version, "reason_phrase": head.reason},
            request=request,
        )

    async def exchange(self, request: LeanRequest) -> tuple[Head, AnswerBody]:
        """Send ``request``; its answer's head, and its body to read and then close
        (closing gives the connection back). Errors as ``handle_async_request``'s."""
        return await self._send(
            request.origin,
            request.data,
            request.method.encode("ascii"),
            request.connect,
            request.read,
            request.pool,
            None,
            request.deadline,
        )

    async def _send(
        self,
        origin: Origin,
        data: bytes,
        method: bytes,
        connect: float | None,
        read: float | None,
        pool: float | None,
        request: httpx.Request | None,
        deadline: float | None = None,
    ) -> tuple[Head, AnswerBody]:
        loop = asyncio.get_running_loop()
        conn = self._idle_connection(loop, origin)
        if conn is None:  # connecting, or waiting for a connection: rare, under the deadline
            async with asyncio.timeout_at(deadline):
                conn = await self._lend(loop, origin, request, connect, pool)
        try:
            conn.start(data, method)
            head = await conn.head(read, deadline)
        except BaseException:
            self._drop(conn)
            raise
        return head, AnswerBody(self, conn, read, deadline)

    def _idle_connection(
        self, loop: asyncio.AbstractEventLoop, origin: Origin
    ) -> _Connection | None:
        """A kept-alive connection to ``origin`` fit for another exchange, if one is idle."""
        idle = self._idle.get(origin)
        now = loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_SECONDS:
                return conn
            self._drop(conn)
        return None

    async def _lend(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: Origin,
        request: httpx.Request | None,
        connect: float | None,
        pool: float | None,
    ) -> _Connection:
        while True:
            conn = self._idle_connection(loop, origin)
            if conn is not None:
                return conn
            if self._open < self._max:
                self._open += 1
                try:
                    return await self._connect(loop, origin, request, connect)
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            waiter = loop.create_future()
            self._waiting.append(waiter)
            try:
                async with asyncio.timeout(pool):
                    await waiter
            except TimeoutError:
                raise httpx.PoolTimeout("no connection free in time", request=request) from None
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)

    async def _connect(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: Origin,
        request: httpx.Request | None,
        timeout: float | None,
    ) -> _Connection:
        scheme, host, port = origin
        name = host.decode("ascii")
        tls = None
        if scheme == b"https":
            if callable(self._ssl):
                self._ssl = self._ssl()
            tls = self._ssl if self._ssl is not None else ssl.create_default_context()
        conn = _Connection(loop, origin)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn, name, port, ssl=tls, server_hostname=name if tls else None
                )
        except TimeoutError:
            conn.close()
            raise httpx.ConnectTimeout(
                f"connecting took over {timeout}s", request=request
            ) from None
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            raise httpx.ConnectError(str(exc), request=request) from exc
        self._all.add(conn)
        return conn

    def give_back(self, conn: _Connection) -> None:
        conn.finish(asyncio.get_running_loop().time())
        if conn.reusable:
            self._idle.setdefault(conn.origin, []).append(conn)
            self._wake_one()
        else:
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        if conn in self._all:
            self._all.discard(conn)
            self._open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        for conn in list(self._all):
            self._drop(conn)
        self._idle.clear()


def asyncio_transport(
    verify: ssl.SSLContext | Callable[[], ssl.SSLContext], limits: httpx.Limits
) -> httpx.AsyncBaseTransport:
    """At most ``limits.max_connections`` connections per origin, kept alive; ``verify``
    may be what makes the TLS context, called on the first https connection."""
    return LeanTransport(verify, limits.max_connections or 1)
