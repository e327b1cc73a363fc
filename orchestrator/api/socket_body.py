"""A download's body read straight off its connection, below h11.

Through httpx, every piece of a body is copied four times on its way up (h11's
receive buffer grows by it, is sliced twice, then httpcore makes ``bytes`` of
it): 0.05 s of CPU per 100 MB against 0.015 s for the socket reads alone. A
result file is hundreds of MB, so once the status and headers are read (by
httpx, as for any call: the retry policy and every check of the answer stay as
they are), a plain HTTP/1.1 body framed by Content-Length is read here from the
connection's own network stream: the same reads, with the same call limits,
timeouts and abort (``transport._GuardedStream``), a piece of at most
``read_bytes`` handed up per read, not copied again.

Anything else (HTTP/2, chunked, no Content-Length, a transport that is not
httpcore's HTTP/1.1 connection, such as a test's mock, or a version of httpx or
httpcore laid out otherwise) gets ``None`` and is read through httpx as before.

The connection is not reused after this: h11 never saw the body, so when the
response is closed httpcore finds the exchange unfinished and closes the
connection (one new connection per file download).

Errors are httpx's, as its own reading raises them: a body that ends before its
Content-Length is a ``RemoteProtocolError``; a read that fails or times out, a
``ReadError`` or ``ReadTimeout``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import h11
import httpcore
import httpx

from orchestrator.api.bodies import content_length

__all__ = ["socket_body"]


def socket_body(response: httpx.Response, read_bytes: int) -> Iterator[bytes] | None:
    """The raw (undecoded) body of ``response`` read off its socket, in reads of at
    most ``read_bytes`` bytes; ``None`` if it is not a plain HTTP/1.1 body with a
    Content-Length on an httpcore connection that has read nothing of it yet."""
    length = content_length(response)
    if (
        length is None
        or response.http_version != "HTTP/1.1"
        or "transfer-encoding" in response.headers
        or response.is_stream_consumed
        or response.is_closed
    ):
        return None
    connection = _http11_connection(response)
    if connection is None:
        return None
    state = getattr(connection, "_h11_state", None)
    network = getattr(connection, "_network_stream", None)
    if not isinstance(state, h11.Connection) or not isinstance(network, httpcore.NetworkStream):
        return None
    if state.their_state is not h11.SEND_BODY:
        return None
    buffered, closed = state.trailing_data  # what arrived with the headers
    if len(buffered) > length:
        return None  # more than the body: h11 reads it as it always has
    timeouts: dict[str, Any] = response.request.extensions.get("timeout", {})
    return _read(network, buffered, closed, length, read_bytes, timeouts.get("read"))


def _http11_connection(response: httpx.Response) -> httpcore.HTTP11Connection | None:
    """The httpcore connection under an httpx response, where httpx's transport and
    httpcore's pool lay it out as they do in the versions this was written against
    (httpx 0.27 on, httpcore 1.0): private attributes, so any other layout reads
    through httpx."""
    stream: Any = response.stream
    for attribute in ("_stream", "_httpcore_stream", "_stream", "_connection"):
        stream = getattr(stream, attribute, None)
        if stream is None:
            return None
    return stream if isinstance(stream, httpcore.HTTP11Connection) else None


def _read(
    network: httpcore.NetworkStream,
    buffered: bytes,
    closed: bool,
    length: int,
    read_bytes: int,
    timeout: float | None,
) -> Iterator[bytes]:
    remaining = length
    if buffered:
        remaining -= len(buffered)
        yield buffered
    while remaining > 0:
        if closed:
            raise httpx.RemoteProtocolError(
                f"peer closed connection without sending complete message body: "
                f"received {length - remaining} bytes, expected {length}"
            )
        try:
            data = network.read(min(read_bytes, remaining), timeout)
        except httpcore.TimeoutException as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except httpcore.NetworkError as exc:
            raise httpx.ReadError(str(exc)) from exc
        if not data:
            closed = True
            continue
        if len(data) > remaining:  # the socket layer reads at least a MiB: drop the excess
            data = data[:remaining]
        remaining -= len(data)
        yield data
