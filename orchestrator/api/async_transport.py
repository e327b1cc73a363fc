"""The async client's network layer: HTTP/1.1 on asyncio Protocols, kept alive.

The worker sends thousands of small exchanges (a POST, a JSON answer of a few
hundred bytes). Through httpx's transport, httpcore's pool and h11 each one
built a dozen event and state objects and crossed asyncio streams a few times:
more CPU per cancel than everything else the worker does (docs/benchmarks.md,
"Cancel fan-out"). Here a connection is an ``asyncio.Protocol`` that writes the
request in one call and parses the answer where it arrives (``data_received``):
the status line and headers at once, then the body as it comes, handed to the
reader a piece at a time.

It keeps every limit the httpcore path had, and the client's on top:

- the status line and headers together at most ``MAX_HEAD_BYTES`` (h11's bound);
  a chunk-size line or the trailers past theirs: a protocol error;
- the body is streamed, never held here beyond ``_PAUSE_ABOVE`` bytes (reading
  from the socket pauses until the reader catches up), so the caller's cap and
  gzip guard (bodies.read_capped_async) decide how much is ever read;
- every wait for the server has httpx's timeouts (connect, read: between any two
  pieces), and the client runs the whole attempt under its deadline; a cancelled
  wait (the deadline, ``abort()``) closes the connection;
- framing is strict: one Content-Length (digits) or ``chunked`` alone; a body cut
  short is an error, never a short answer; bytes after an answer, or an answer
  nobody asked for, end the connection;
- errors are httpx's (ConnectError, ReadTimeout, RemoteProtocolError, ...), as
  httpx's own transport raises them, so the client classifies them unchanged.

A connection is reused only after an answer read to its end with keep-alive, and
not once it has sat idle ``KEEPALIVE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpx

__all__ = ["KEEPALIVE_SECONDS", "MAX_HEAD_BYTES", "LeanTransport", "asyncio_transport"]

MAX_HEAD_BYTES = 16 * 1024  # status line and headers (h11's max_incomplete_event_size)
MAX_CHUNK_LINE = 1024  # a chunk-size line, extensions included
MAX_TRAILER_BYTES = 16 * 1024
KEEPALIVE_SECONDS = 5.0  # an idle connection older than this is closed, not reused
_PAUSE_ABOVE = 1 << 20  # body bytes buffered for the reader before reading pauses

# body framing
_NONE, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)
# chunked parser states
_SIZE, _DATA, _DATA_END, _TRAILERS = range(4)
_NO_BODY_STATUSES = frozenset((204, 304))


class _Answer:
    """What a connection hands the transport: the head, then body pieces."""

    __slots__ = ("headers", "reason", "status", "version")

    def __init__(self, status: int, reason: bytes, version: bytes, headers: list[Any]) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: tuple[bytes, bytes, int]) -> None:
        self._loop = loop
        self.origin = origin  # the pool's key
        self._request_method = b"GET"
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False  # an exchange is under way (its answer not fully read)
        self.reusable = False  # the last answer was read to its end, keep-alive
        self.idle_since = 0.0
        self._buffer = b""  # the head so far; in the body, bytes not yet parsed
        self._head: _Answer | None = None
        self._framing = _NONE
        self._remaining = 0  # body bytes still due (Content-Length), or of this chunk
        self._chunk_state = _SIZE
        self._trailer_bytes = 0
        self._keep_alive = True
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._complete = False  # the whole body has arrived
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and not self._complete:
            if self._head is not None and self._framing == _UNTIL_CLOSE:
                self._complete = True  # a body framed by the close has ended
            elif self._error is None:
                self._error = (
                    httpx.ReadError(str(exc))
                    if exc is not None
                    else httpx.RemoteProtocolError(
                        "the server closed the connection before the answer was complete"
                    )
                )
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost says the rest

    def data_received(self, data: bytes) -> None:
        if not self.busy or self._complete:  # nothing asked: the connection is done
            self._fail(httpx.RemoteProtocolError("the server sent bytes nobody asked for"))
            return
        try:
            if self._head is None:
                self._buffer += data
                self._parse_head()
            else:
                self._parse_body(data)
        except httpx.RemoteProtocolError as exc:
            self._fail(exc)
            return
        if self._buffered > _PAUSE_ABOVE and not self._paused and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    # -- parsing -----------------------------------------------------------------

    def _parse_head(self) -> None:
        while self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise httpx.RemoteProtocolError(
                        f"the answer's headers exceed {MAX_HEAD_BYTES} bytes"
                    )
                return
            if end > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError(
                    f"the answer's headers exceed {MAX_HEAD_BYTES} bytes"
                )
            head, rest = self._buffer[:end], self._buffer[end + 4 :]
            self._buffer = b""
            answer = _parse_head(head)
            if 100 <= answer.status < 200:
                if answer.status == 101:
                    raise httpx.RemoteProtocolError("the server switched protocols unasked")
                self._buffer = rest  # an interim answer: the real one follows
                continue
            self._frame(answer)
            self._head = answer
            if rest:
                self._parse_body(rest)
            elif self._framing == _NONE:
                self._complete = True

    def _frame(self, answer: _Answer) -> None:
        lengths: list[bytes] = []
        encodings: list[bytes] = []
        connection = b""
        for name, value in answer.headers:
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"transfer-encoding":
                encodings.append(value.strip().lower())
            elif name == b"connection":
                connection += b"," + value.lower()
        tokens = {t.strip() for t in connection.split(b",")}
        if answer.version == b"HTTP/1.0":
            self._keep_alive = b"keep-alive" in tokens
        else:
            self._keep_alive = b"close" not in tokens
        if self._request_method == b"HEAD" or answer.status in _NO_BODY_STATUSES:
            self._framing = _NONE
            return
        if encodings:
            if lengths:
                raise httpx.RemoteProtocolError("both Content-Length and Transfer-Encoding")
            if encodings != [b"chunked"]:
                raise httpx.RemoteProtocolError(
                    f"unsupported Transfer-Encoding {b', '.join(encodings)[:40]!r}"
                )
            self._framing = _CHUNKED
            self._chunk_state = _SIZE
            return
        if lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
                raise httpx.RemoteProtocolError(f"bad Content-Length {lengths[0][:40]!r}")
            self._remaining = int(lengths[0])
            self._framing = _LENGTH if self._remaining else _NONE
            return
        self._framing = _UNTIL_CLOSE
        self._keep_alive = False

    def _parse_body(self, data: bytes) -> None:
        framing = self._framing
        if framing == _LENGTH:
            if len(data) > self._remaining:
                raise httpx.RemoteProtocolError("the answer is longer than its Content-Length")
            self._remaining -= len(data)
            self._give(data)
            if not self._remaining:
                self._complete = True
        elif framing == _CHUNKED:
            self._parse_chunks(data)
        elif framing == _UNTIL_CLOSE:
            self._give(data)
        else:
            raise httpx.RemoteProtocolError("the answer is longer than its framing")

    def _parse_chunks(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        at = 0
        while at < len(buffer) and not self._complete:
            if self._chunk_state == _DATA:
                take = min(self._remaining, len(buffer) - at)
                self._give(buffer[at : at + take])
                at += take
                self._remaining -= take
                if not self._remaining:
                    self._chunk_state = _DATA_END
                continue
            end = buffer.find(b"\r\n", at)
            if end < 0:
                self._partial_line(len(buffer) - at)
                self._buffer = buffer[at:]
                return
            self._chunk_line(buffer[at:end])
            at = end + 2
        if self._complete and at < len(buffer):
            raise httpx.RemoteProtocolError("bytes after the chunked answer")

    def _partial_line(self, size: int) -> None:
        """A line not ended yet, ``size`` bytes so far: within its bound?"""
        state = self._chunk_state
        if state == _SIZE and size > MAX_CHUNK_LINE:
            raise httpx.RemoteProtocolError("a chunk-size line is too long")
        if state == _TRAILERS and self._trailer_bytes + size > MAX_TRAILER_BYTES:
            raise httpx.RemoteProtocolError("the trailers are too long")
        if state == _DATA_END and size >= 2:
            raise httpx.RemoteProtocolError("a chunk does not end with CRLF")

    def _chunk_line(self, line: bytes) -> None:
        """A line of the chunked framing: after a chunk's data, a size, or a trailer."""
        state = self._chunk_state
        if state == _DATA_END:
            if line:
                raise httpx.RemoteProtocolError("a chunk does not end with CRLF")
            self._chunk_state = _SIZE
        elif state == _SIZE:
            if len(line) > MAX_CHUNK_LINE:
                raise httpx.RemoteProtocolError("a chunk-size line is too long")
            size = line.split(b";", 1)[0].strip()
            if not size or len(size) > 15 or size.strip(b"0123456789abcdefABCDEF"):
                raise httpx.RemoteProtocolError(f"bad chunk size {size[:20]!r}")
            self._remaining = int(size, 16)
            self._chunk_state = _DATA if self._remaining else _TRAILERS
        else:  # trailers, until an empty line
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > MAX_TRAILER_BYTES:
                raise httpx.RemoteProtocolError("the trailers are too long")
            if not line:
                self._complete = True

    def _give(self, piece: bytes) -> None:
        if piece:
            self._pieces.append(piece)
            self._buffered += len(piece)

    def _fail(self, exc: Exception) -> None:
        if self._error is None and not self._complete:
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
        self._request_method = method
        self._head = None
        self._buffer = b""
        self._framing = _NONE
        self._remaining = 0
        self._trailer_bytes = 0
        self._pieces.clear()
        self._buffered = 0
        self._complete = False
        self._error = None
        self.transport.write(request)

    async def _wait(self, timeout: float | None) -> None:
        """Until something arrives (or the connection ends), at most ``timeout``."""
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = (
            self._loop.call_later(timeout, _expire, waiter, timeout)
            if timeout is not None
            else None
        )
        try:
            await waiter
        except BaseException:  # a timeout, the attempt's deadline, abort(): unusable now
            self.close()
            raise
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def head(self, timeout: float | None) -> _Answer:
        while self._head is None:
            if self._error is not None:
                raise self._error
            if self.closed:
                raise httpx.RemoteProtocolError("the server closed the connection unanswered")
            await self._wait(timeout)
        return self._head

    async def pieces(self, timeout: float | None) -> AsyncIterator[bytes]:
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
            if self._complete:
                return
            if self.closed:
                raise httpx.RemoteProtocolError("the connection closed mid-answer")
            await self._wait(timeout)

    def finish(self, now: float) -> None:
        """The reader is done with the answer: keep the connection if it may be reused."""
        self.busy = False
        self.reusable = (
            self._complete and self._error is None and self._keep_alive and not self.closed
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


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"no data from the server for {timeout:g}s"))


def _parse_head(head: bytes) -> _Answer:
    lines = head.split(b"\r\n")
    status_line = lines[0]
    parts = status_line.split(b" ", 2)
    if (
        len(parts) < 2
        or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise httpx.RemoteProtocolError(f"bad status line {status_line[:60]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name or b"\t" in name:
            raise httpx.RemoteProtocolError(f"bad header line {line[:60]!r}")
        headers.append((name.lower(), value.strip(b" \t")))
    reason = parts[2] if len(parts) > 2 else b""
    return _Answer(int(parts[1]), reason, parts[0], headers)


class _Body(httpx.AsyncByteStream):
    """An answer's body as it arrives; closing it gives the connection back (or closes
    it, when the body was not read to its end)."""

    def __init__(self, transport: LeanTransport, conn: _Connection, timeout: float | None):
        self._transport = transport
        self._conn: _Connection | None = conn
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        async for piece in conn.pieces(self._timeout):
            yield piece

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:  # once, however often it is closed
            self._transport.give_back(conn)


class LeanTransport(httpx.AsyncBaseTransport):
    """Up to ``max_connections`` kept-alive connections per origin, one exchange each
    at a time; a request finding none free waits (httpx's pool timeout)."""

    def __init__(self, ssl_context: ssl.SSLContext | None, max_connections: int) -> None:
        self._ssl = ssl_context
        self._max = max(1, max_connections)
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}
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
        data = _serialize(request, body)
        loop = asyncio.get_running_loop()
        conn = await self._lend(loop, (scheme, url.raw_host, port), request, timeouts)
        try:
            conn.start(data, request.method.encode("ascii"))
            head = await conn.head(read_timeout)
        except BaseException:
            self._drop(conn)
            raise
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=_Body(self, conn, read_timeout),
            extensions={"http_version": head.version, "reason_phrase": head.reason},
            request=request,
        )

    async def _lend(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: tuple[bytes, bytes, int],
        request: httpx.Request,
        timeouts: dict[str, float | None],
    ) -> _Connection:
        idle = self._idle.get(origin)
        while True:
            now = loop.time()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < KEEPALIVE_SECONDS:
                    return conn
                self._drop(conn)
            if self._open < self._max:
                self._open += 1
                try:
                    return await self._connect(loop, origin, request, timeouts.get("connect"))
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            waiter = loop.create_future()
            self._waiting.append(waiter)
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await waiter
            except TimeoutError:
                raise httpx.PoolTimeout("no connection free in time", request=request) from None
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
            idle = self._idle.get(origin)

    async def _connect(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: tuple[bytes, bytes, int],
        request: httpx.Request,
        timeout: float | None,
    ) -> _Connection:
        scheme, host, port = origin
        name = host.decode("ascii")
        tls = self._ssl if scheme == b"https" else None
        if scheme == b"https" and tls is None:
            tls = ssl.create_default_context()
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


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    """The request as it goes on the wire; a header with a line break is refused
    (httpx checks this of the values it is given; here it is checked again)."""
    url = request.url
    lines = [request.method.encode("ascii") + b" " + url.raw_path + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers.raw]
    head = b"\r\n".join(lines)
    breaks = len(lines) - 1
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks:
        raise httpx.LocalProtocolError("a header holds a line break", request=request)
    return head + b"\r\n\r\n" + body


def asyncio_transport(verify: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """At most ``limits.max_connections`` connections per origin, kept alive."""
    return LeanTransport(verify, limits.max_connections or 1)
