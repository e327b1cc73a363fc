"""HTTP/1.1 for the async client's connections: a request as bytes, an answer parsed
from bytes as they arrive. Pure: no sockets, no event loop (api/async_transport.py
runs it on asyncio Protocols).

What an answer may be is bounded and strict, as h11 (httpcore's parser) has it:

- the status line and headers together at most ``MAX_HEAD_BYTES``; a chunk-size
  line at most ``MAX_CHUNK_LINE``, the trailers ``MAX_TRAILER_BYTES``;
- framing: one Content-Length (digits) or ``Transfer-Encoding: chunked`` alone,
  else the body runs to the close (and the connection is not kept); both, two
  lengths, another coding: refused;
- a body longer than it said, or bytes after it, are errors (we never pipeline, so
  nothing may follow an answer); interim 1xx answers are skipped, 101 refused.

Errors are httpx's ``RemoteProtocolError``, as httpx's own transport raises them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import httpx

__all__ = [
    "MAX_CHUNK_LINE",
    "MAX_HEAD_BYTES",
    "MAX_TRAILER_BYTES",
    "AnswerParser",
    "Head",
    "RequestTemplate",
    "parse_head",
    "serialize",
]

# The most an error quotes of what a server sent in a head (a status line, a header's
# name or value, a chunk size): enough to recognise it, too little to carry the key a
# hostile server echoes back (the scrubbing matches only the whole key).
_QUOTED = 16


def _quoted(value: bytes) -> str:
    """What a server sent, for an error: as sent if it is short, as real status lines,
    header names and values are, else only its length."""
    return repr(value) if len(value) <= _QUOTED else f"({len(value)} bytes)"


MAX_HEAD_BYTES = 16 * 1024  # status line and headers (h11's max_incomplete_event_size)
MAX_CHUNK_LINE = 1024  # a chunk-size line, extensions included
MAX_TRAILER_BYTES = 16 * 1024

# body framing
_NONE, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)
# chunked parser states
_SIZE, _DATA, _DATA_END, _TRAILERS = range(4)
_NO_BODY_STATUSES = frozenset((204, 304))


class Head:
    """An answer's status line and headers (names lower-cased)."""

    __slots__ = ("headers", "reason", "status", "version")

    def __init__(
        self, status: int, reason: bytes, version: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers


def serialize(request: httpx.Request, body: bytes) -> bytes:
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


_MARK = "/__path__"  # where a template's path goes (split off once, at the template's making)
# Nothing httpx would percent-encode or normalise (no dot segments): an id's characters.
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_-]+)+")


class RequestTemplate:
    """Requests of one method to one base URL as wire bytes, all but the path made once:
    the bytes ``serialize`` gives for the httpx.Request with the same URL, query and
    headers (so the same Host, Content-Length and header checks), the path filled in
    per request. ``fill`` takes only a plain path (letters, digits, ``/_-``); for any
    other it says None and the caller builds an httpx.Request."""

    __slots__ = ("_after", "_before", "origin")

    def __init__(
        self,
        method: str,
        base_url: str,
        *,
        params: Mapping[str, str | None] | None,
        headers: httpx.Headers,
    ) -> None:
        request = httpx.Request(
            method, base_url.rstrip("/") + _MARK, params=params, headers=headers
        )
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}", request=request)
        self.origin = (scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))
        wire = serialize(request, request.read())
        line_end = wire.index(b"\r\n")
        at = wire.index(_MARK.encode("ascii"), 0, line_end)
        self._before = wire[:at]  # "POST /v1"
        self._after = wire[at + len(_MARK) :]  # "?api-version=... HTTP/1.1\r\nHost: ..."

    def fill(self, path: str) -> bytes | None:
        if _PLAIN_PATH.fullmatch(path) is None:
            return None
        return self._before + path.encode("ascii") + self._after


def parse_head(head: bytes) -> Head:
    """The status line and header lines (without the blank line that ends them)."""
    lines = head.split(b"\r\n")
    status_line = lines[0]
    parts = status_line.split(b" ", 2)
    if (
        len(parts) < 2
        or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise httpx.RemoteProtocolError(f"bad status line {_quoted(status_line)}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name or b"\t" in name:
            raise httpx.RemoteProtocolError(
                f"bad header line ({len(line)} bytes, name {_quoted(name)})"
                if colon
                else f"bad header line ({len(line)} bytes, no colon)"
            )
        headers.append((name.lower(), value.strip(b" \t")))
    reason = parts[2] if len(parts) > 2 else b""
    return Head(int(parts[1]), reason, parts[0], headers)


class AnswerParser:
    """One answer to a ``method`` request: ``feed`` it bytes as they arrive; it returns
    the body's pieces so far. ``head`` is set once the headers are in, ``complete`` once
    the body is; ``keep_alive`` says whether the connection may carry another
    exchange after it."""

    def __init__(self, method: bytes) -> None:
        self._method = method
        self.head: Head | None = None
        self.complete = False
        self.keep_alive = True
        self._buffer = b""  # the head so far; in a chunked body, a line not yet ended
        self._framing = _NONE
        self._remaining = 0  # body bytes still due (Content-Length), or of this chunk
        self._chunk_state = _SIZE
        self._trailer_bytes = 0
        self._pieces: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        if self.complete:
            raise httpx.RemoteProtocolError("the server sent bytes after its answer")
        self._pieces = []
        if self.head is None:
            self._buffer += data
            self._parse_head()
        else:
            self._parse_body(data)
        return self._pieces

    def closed(self) -> None:
        """The server closed the connection: the end of a body framed by the close, or
        (anywhere else before the answer is complete) an error."""
        if self.complete:
            return
        if self.head is not None and self._framing == _UNTIL_CLOSE:
            self.complete = True
            return
        raise httpx.RemoteProtocolError(
            "the server closed the connection before the answer was complete"
        )

    # -- the head ------------------------------------------------------------------

    def _parse_head(self) -> None:
        while self.head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end > MAX_HEAD_BYTES or (end < 0 and len(self._buffer) > MAX_HEAD_BYTES):
                raise httpx.RemoteProtocolError(
                    f"the answer's headers exceed {MAX_HEAD_BYTES} bytes"
                )
            if end < 0:
                return
            head, rest = self._buffer[:end], self._buffer[end + 4 :]
            self._buffer = b""
            answer = parse_head(head)
            if 100 <= answer.status < 200:
                if answer.status == 101:
                    raise httpx.RemoteProtocolError("the server switched protocols unasked")
                self._buffer = rest  # an interim answer: the real one follows
                continue
            self._frame(answer)
            self.head = answer
            if rest:
                self._parse_body(rest)
            elif self._framing == _NONE:
                self.complete = True

    def _frame(self, answer: Head) -> None:
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
            self.keep_alive = b"keep-alive" in tokens
        else:
            self.keep_alive = b"close" not in tokens
        # Checked whether or not a body may follow, as h11 does on the sync path: a
        # 204's `Content-Length: ²` went on to the caller, whose int() raised ValueError.
        if lengths and (len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18):
            raise httpx.RemoteProtocolError(f"bad Content-Length {_quoted(lengths[0])}")
        if self._method == b"HEAD" or answer.status in _NO_BODY_STATUSES:
            self._framing = _NONE
            return
        if encodings:
            if lengths:
                raise httpx.RemoteProtocolError("both Content-Length and Transfer-Encoding")
            if encodings != [b"chunked"]:
                raise httpx.RemoteProtocolError(
                    f"unsupported Transfer-Encoding {_quoted(b', '.join(encodings))}"
                )
            self._framing = _CHUNKED
            return
        if lengths:
            self._remaining = int(lengths[0])
            self._framing = _LENGTH if self._remaining else _NONE
            return
        self._framing = _UNTIL_CLOSE
        self.keep_alive = False

    # -- the body ------------------------------------------------------------------

    def _parse_body(self, data: bytes) -> None:
        framing = self._framing
        if framing == _LENGTH:
            if len(data) > self._remaining:
                raise httpx.RemoteProtocolError("the answer is longer than its Content-Length")
            self._remaining -= len(data)
            self._give(data)
            if not self._remaining:
                self.complete = True
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
        while at < len(buffer) and not self.complete:
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
        if self.complete and at < len(buffer):
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
                raise httpx.RemoteProtocolError(f"bad chunk size {_quoted(size)}")
            self._remaining = int(size, 16)
            self._chunk_state = _DATA if self._remaining else _TRAILERS
        else:  # trailers, until an empty line
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > MAX_TRAILER_BYTES:
                raise httpx.RemoteProtocolError("the trailers are too long")
            if not line:
                self.complete = True

    def _give(self, piece: bytes) -> None:
        if piece:
            self._pieces.append(piece)
