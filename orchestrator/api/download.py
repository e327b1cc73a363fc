"""An open file download: the body streamed, decoded in bounded pieces, re-chunked.

The download has no deadline (files reach hundreds of MB) but a minimum
throughput (``MinThroughput``), checked by the socket layer while it waits and
here between reads; ``abort`` ends it at once.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator

import httpx

from orchestrator.api.bodies import CorruptBody, Decoder, content_length, raw_chunks
from orchestrator.api.errors import ApiAborted, ApiCall, ApiTransportError
from orchestrator.api.limits import Aborted, CallScope, LimitReached
from orchestrator.api.socket_body import socket_body
from orchestrator.core.retry_policy import TransportFailure

__all__ = ["DEFAULT_CHUNK_SIZE", "DOWNLOAD_READ_BYTES", "Download"]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 64 * 1024
DOWNLOAD_READ_BYTES = 1 << 20  # per socket read (CallScope.read_bytes)
_TEXT_CHARS = 500


class Download:
    """An open, streaming file download. Use within ``BatchApiClient.download``."""

    def __init__(
        self,
        response: httpx.Response,
        *,
        call: ApiCall,
        file_id: str,
        attempts: int,
        request_id: str | None,
        scrub: Callable[[str], str],
        extra: dict[str, str | None],
        scope: CallScope,
        decoder: Decoder,
    ) -> None:
        self._response = response
        self._decoder = decoder
        self._call = call
        self._scrub = scrub
        self._extra = extra
        self._scope = scope
        self.file_id = file_id
        self.attempts = attempts
        self.status = response.status_code
        self.request_id = request_id
        self.content_length = content_length(response)
        self.bytes_received = 0  # decoded bytes handed to the caller
        self._off_socket: int | None = None  # bytes read below httpx (socket_body), if so
        self._read_to_end = False  # the body was read to its end and every check passed

    @property
    def end_checked(self) -> bool:
        """Is the end the body was read to vouched for as its real end? A body with
        neither a length nor chunked framing ends where the connection closed, which a
        cut at a line's end looks exactly like. Vouched: a Content-Length (checked
        against the bytes received), ``Transfer-Encoding: chunked`` (h11 raises if the
        last-chunk never came). Not a compressed stream's own end: a gzip body may be
        several members, and the end of any is a valid end, so one cut between two reads
        as a whole body of one. False until the body has been read to its end without an
        error."""
        if not self._read_to_end:
            return False
        if self.content_length is not None:
            return True
        codings: str = self._response.headers.get("transfer-encoding", "")
        return codings.rsplit(",", 1)[-1].strip().lower() == "chunked"

    @property
    def raw_bytes_received(self) -> int:
        """Bytes read off the wire (before any content decoding)."""
        if self._off_socket is not None:
            return self._off_socket
        return self._response.num_bytes_downloaded

    def _raw(self) -> Iterator[bytes]:
        """The undecoded body: off the socket where it is a plain HTTP/1.1 body with a
        Content-Length (fewer copies), else through httpx."""
        direct = socket_body(self._response, self._scope.read_bytes or DOWNLOAD_READ_BYTES)
        if direct is None:
            yield from raw_chunks(self._response)
            return
        self._off_socket = 0
        for raw in direct:
            self._off_socket += len(raw)
            yield raw

    def _cut_short(
        self, kind: TransportFailure, detail: str, timeout: float | None = None
    ) -> ApiTransportError:
        error = ApiTransportError(
            self._call,
            kind=kind,
            detail=self._scrub(detail),
            timeout=timeout,
            file_id=self.file_id,
            received=self.raw_bytes_received,
            expected=self.content_length,
        )
        logger.debug("%s", error, extra=self._extra)  # the caller says it once, with context
        return error

    def _decoded(self) -> Iterator[bytes]:
        decoder = self._decoder
        scope = self._scope
        for raw in self._raw():
            scope.received(len(raw))
            scope.check()
            yield from decoder.feed(raw)
        decoder.finish()

    def iter_bytes(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Stream the body in chunks of ``chunk_size`` decoded bytes (the last may be
        shorter). Raises a retryable ``ApiTransportError`` if it is cut short or too
        slow (restart the whole download then: there is no resume), ``ApiAborted``
        when the process is stopping."""
        buffer = bytearray()
        for piece in self.iter_pieces(max(chunk_size, 1)):
            buffer += piece
            while len(buffer) >= chunk_size:
                with memoryview(buffer) as view:
                    chunk = bytes(view[:chunk_size])
                del buffer[:chunk_size]
                yield chunk
        if buffer:
            yield bytes(buffer)

    def iter_pieces(self, max_size: int) -> Iterator[bytes]:
        """The body as it arrives, decoded: pieces of at most ``max_size`` bytes, not
        joined (no copy for a reader that needs no fixed size). Raises as
        ``iter_bytes`` does."""
        try:
            for piece in self._decoded():
                self.bytes_received += len(piece)
                if len(piece) <= max_size:
                    yield piece
                    continue
                with memoryview(piece) as view:
                    for start in range(0, len(piece), max_size):
                        yield bytes(view[start : start + max_size])
        except Aborted as exc:
            raise ApiAborted(self._call, file_id=self.file_id) from exc
        except LimitReached as exc:
            raise self._cut_short(TransportFailure.TIMEOUT, str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise self._cut_short(
                TransportFailure.TIMEOUT, f"{type(exc).__name__} while reading the body"
            ) from exc
        except (httpx.TransportError, httpx.DecodingError, CorruptBody, zlib.error) as exc:
            raise self._cut_short(
                TransportFailure.READ, f"{type(exc).__name__}: {exc}"[:_TEXT_CHARS]
            ) from exc
        if self.content_length is not None and self.raw_bytes_received != self.content_length:
            raise self._cut_short(TransportFailure.READ, "body length differs from Content-Length")
        self._read_to_end = True
        logger.debug(
            "%s: received %d bytes", self._call, self.raw_bytes_received, extra=self._extra
        )
