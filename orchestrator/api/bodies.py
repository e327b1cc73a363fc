"""Reading an HTTP body without trusting its size.

httpx decodes gzip a network read at a time with no bound on the output: 64 KB
of a gzip bomb becomes 64 MB in one call, and ``response.read()`` keeps it all
(a 1 MB bomb sent as a Batch object took a process to 4.4 GB). Here the raw
bytes are decoded by us, at most ``PIECE`` decoded bytes at a time, and each
piece is counted against the cap before the next is made.

We ask for gzip only (``ACCEPT_ENCODING``); deflate and identity are read too,
anything else is refused rather than passed on undecoded.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping

import httpx

from orchestrator.api.limits import CallScope

__all__ = [
    "ACCEPT_ENCODING",
    "PIECE",
    "BodyTooLarge",
    "CorruptBody",
    "Decoder",
    "UnsupportedEncoding",
    "content_length",
    "declared_length",
    "raw_chunks",
    "read_capped",
    "read_capped_async",
    "read_pieces_capped",
]

ACCEPT_ENCODING = "gzip"
PIECE = 256 * 1024  # decoded bytes made per step: the most a bomb gets out of us at once
_GZIP = zlib.MAX_WBITS | 16
_GZIP_MAGIC = b"\x1f\x8b"


class BodyTooLarge(Exception):
    def __init__(self, cap: int, size: int, *, declared: bool) -> None:
        how = "declares" if declared else "is at least"
        super().__init__(
            f"the answer {how} {size} bytes, more than the cap of {cap} bytes "
            "(setting api_max_answer_bytes)"
        )
        self.cap = cap
        self.size = size


class UnsupportedEncoding(Exception):
    """A Content-Encoding we did not ask for and do not decode."""


class CorruptBody(Exception):
    """The compressed body does not decompress."""


def content_length(response: httpx.Response) -> int | None:
    """The body's length, if its Content-Length frames it: with a Transfer-Encoding
    beside it, the transfer coding does and the length is to be ignored (RFC 9112 6.3)."""
    if "transfer-encoding" in response.headers:
        return None
    return declared_length(response.headers)


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length, if it is one number of ASCII digits (for the cap's early
    refusal). str.isdigit() alone takes `²` (int() raises ValueError) and `٣` (int()
    reads 3); int() refuses 5000 digits. Past 18 digits it is more than any cap, and
    the body is still read under the cap as if no length were given."""
    raw = headers.get("content-length", "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The body as it arrives, undecoded (see ``Decoder.of``)."""
    if response.is_stream_consumed:  # built in memory (a test's mock): httpx has it decoded
        return iter([response.content])
    return response.iter_raw()


class Decoder:
    """Decodes one body's Content-Encoding, ``PIECE`` bytes at a time."""

    @classmethod
    def of(cls, response: httpx.Response) -> Decoder:
        if response.is_stream_consumed:
            return cls(None)
        return cls(response.headers.get("content-encoding"))

    def __init__(self, content_encoding: str | None) -> None:
        encoding = (content_encoding or "identity").strip().lower()
        self.encoding = encoding
        self._deflate_first = False
        self._fed = False  # any compressed bytes at all (an empty body is left alone)
        self._over = False  # the compressed data has ended; what follows is not read
        if encoding in ("", "identity"):
            self._zlib = None
        elif encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(_GZIP)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()
            self._deflate_first = True  # zlib-wrapped or raw: servers send both
        else:
            raise UnsupportedEncoding(
                f"Content-Encoding {encoding[:40]!r} was not asked for (we accept gzip)"
            )

    def feed(self, data: bytes) -> Iterator[bytes]:
        d = self._zlib
        if d is None:
            if data:
                yield data
            return
        if self._over:
            return
        self._fed = self._fed or bool(data)
        while True:
            try:
                out = d.decompress(data, PIECE)
            except zlib.error as exc:
                if not self._deflate_first:
                    what = f"the {self.encoding} body does not decompress: {exc}"
                    raise CorruptBody(what) from exc
                d = self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                self._deflate_first = False
                continue
            self._deflate_first = False
            if out:
                yield out
            data = d.unconsumed_tail
            if d.eof and (rest := d.unused_data) and not _GZIP_MAGIC.startswith(rest):
                if rest[:2] == _GZIP_MAGIC and self.encoding != "deflate":
                    # a gzip body may be several members, one after another (RFC 1952)
                    data, d = rest, zlib.decompressobj(_GZIP)
                    self._zlib = d
                    continue
                self._over = True  # anything else after the end (padding) is left unread,
                return  # as gzip.decompress leaves zeros (zlib would keep it all in memory)
            if not data and len(out) < PIECE:
                return

    def finish(self) -> None:
        """At the end of the body: a compressed one must have reached its own end, or it
        was cut short (the HTTP framing can be whole around a cut stream)."""
        d = self._zlib
        if d is not None and self._fed and not d.eof:
            raise CorruptBody(f"the {self.encoding} body ends before its compressed data does")


def read_capped(response: httpx.Response, scope: CallScope, cap: int, *, truncate: bool) -> bytes:
    """The decoded body, never more than ``cap`` bytes of it held.

    Past the cap: with ``truncate`` (an error body, read for its excerpt) the first
    ``cap`` bytes; otherwise ``BodyTooLarge``, and ``CorruptBody`` for a compressed
    body that ends before its compressed data does. Between network reads the call's
    limit and the interrupter are checked.
    """
    decoder = Decoder.of(response)
    declared = content_length(response)
    if not truncate and decoder.encoding in ("", "identity") and (declared or 0) > cap:
        raise BodyTooLarge(cap, declared or 0, declared=True)
    buffer = bytearray()
    for raw in raw_chunks(response):
        scope.received(len(raw))
        scope.check()
        for piece in decoder.feed(raw):
            buffer += piece
            if len(buffer) > cap:
                if truncate:
                    return bytes(buffer[:cap])
                raise BodyTooLarge(cap, len(buffer), declared=False)
    if not truncate:  # an excerpt of an error body may well be cut
        decoder.finish()
    return bytes(buffer)


async def read_capped_async(response: httpx.Response, cap: int, *, truncate: bool) -> bytes:
    """``read_capped`` for the async client: the same cap, decoded a ``PIECE`` at a
    time. Its limit and its abort are the caller's (the attempt's timeout, and
    cancelling its task), so no check between reads."""
    decoder = Decoder.of(response)
    raws = [response.content] if response.is_stream_consumed else response.aiter_raw()
    return await _read(_aiter(raws), decoder, content_length(response), cap, truncate)


async def read_pieces_capped(
    pieces: AsyncIterable[bytes],
    content_encoding: str | None,
    declared: int | None,
    cap: int,
    *,
    truncate: bool,
) -> bytes:
    """``read_capped_async`` of a body given as its raw pieces, its Content-Encoding
    and its Content-Length (the async client's lean exchange: no httpx.Response)."""
    return await _read(pieces, Decoder(content_encoding), declared, cap, truncate)


async def _read(
    raws: AsyncIterable[bytes], decoder: Decoder, declared: int | None, cap: int, truncate: bool
) -> bytes:
    if not truncate and decoder.encoding in ("", "identity") and (declared or 0) > cap:
        raise BodyTooLarge(cap, declared or 0, declared=True)
    buffer = bytearray()
    async for raw in raws:
        for piece in decoder.feed(raw):
            buffer += piece
            if len(buffer) > cap:
                if truncate:
                    return bytes(buffer[:cap])
                raise BodyTooLarge(cap, len(buffer), declared=False)
    if not truncate:  # an excerpt of an error body may well be cut
        decoder.finish()
    return bytes(buffer)


async def _aiter(chunks: list[bytes] | AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if isinstance(chunks, list):
        for chunk in chunks:
            yield chunk
    else:
        async for chunk in chunks:
            yield chunk
