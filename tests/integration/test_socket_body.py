"""A download's body read off the socket below h11 (api/socket_body.py), against a
real socket: the same bytes, the same errors and bounds as through httpx, and the
connection closed after it."""

from __future__ import annotations

import hashlib
import socket
import threading
import zlib
from typing import Any

import pytest

from orchestrator.api import ApiSettings, ApiTransportError, BatchApiClient
from orchestrator.api.download import Download
from orchestrator.api.socket_body import _http11_connection
from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy, TransportFailure
from orchestrator.secret import Secret

from .raw_http import RawServer, head

pytestmark = pytest.mark.timeout(60)

BODY = b"".join(b'{"custom_id":"c%d","n":%d}\n' % (i, i) for i in range(120_000))  # 3.5 MB


def client(server: RawServer, **settings: Any) -> BatchApiClient:
    return BatchApiClient(
        ApiSettings(api_key=Secret("sk-socket-body-0123456789"), base_url=server.url, **settings),
        policy=RetryPolicy(max_in_process_attempts=1),
        clock=ManualClock(),
    )


def sending(first: bytes, rest: bytes = b"", *, then: bytes = b"") -> Any:
    """Send ``first`` in one write (the head and what arrives with it), ``rest`` in
    64 KB writes, then ``then``; close."""

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(first)
        for i in range(0, len(rest), 1 << 16):
            conn.sendall(rest[i : i + (1 << 16)])
        if then:
            conn.sendall(then)

    return answer


def read_all(api: BatchApiClient) -> tuple[bytes, Download, bool]:
    """The body as the ingest reads it, the download, and whether its connection was
    closed once the download was (it must not go back to the pool)."""
    pieces: list[bytes] = []
    with api.download("file-abc") as download:
        connection = _http11_connection(download._response)
        for piece in download.iter_pieces(1 << 20):
            assert len(piece) <= 1 << 20
            pieces.append(piece)
    return b"".join(pieces), download, connection is not None and connection.is_closed()


def test_a_content_length_body_is_read_off_the_socket_whole_and_the_connection_closed() -> None:
    answer = sending(head(Content_Length=str(len(BODY))) + BODY[:1000], BODY[1000:])
    with RawServer(answer) as server, client(server) as api:
        data, download, closed = read_all(api)
    assert hashlib.sha256(data).digest() == hashlib.sha256(BODY).digest()
    assert download._off_socket == len(BODY) == download.raw_bytes_received  # not via httpx
    assert closed


def test_bytes_after_the_content_length_are_not_handed_out() -> None:
    answer = sending(head(Content_Length=str(len(BODY))), BODY, then=b"garbage\n" * 1000)
    with RawServer(answer) as server, client(server) as api:
        data, download, _ = read_all(api)
    assert data == BODY and download._off_socket == len(BODY)


def test_a_body_cut_before_its_content_length_is_a_cut_download() -> None:
    answer = sending(head(Content_Length=str(len(BODY))), BODY[:200_000])
    with (
        RawServer(answer) as server,
        client(server) as api,
        pytest.raises(ApiTransportError) as info,
    ):
        read_all(api)
    assert info.value.kind is TransportFailure.READ
    assert "complete message body" in str(info.value)


def test_a_body_that_stalls_is_cut_at_the_read_timeout() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length=str(len(BODY))) + BODY[:5000])
        stop.wait(30)

    with (
        RawServer(answer) as server,
        client(server, read_timeout=0.3) as api,
        pytest.raises(ApiTransportError) as info,
    ):
        read_all(api)
    assert info.value.kind is TransportFailure.TIMEOUT


def test_a_gzip_body_with_a_content_length_is_read_off_the_socket_and_decoded() -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    packed = compressor.compress(BODY) + compressor.flush()
    answer = sending(head(Content_Encoding="gzip", Content_Length=str(len(packed))), packed)
    with RawServer(answer) as server, client(server) as api:
        data, download, _ = read_all(api)
    assert data == BODY
    assert download._off_socket == len(packed) and download.bytes_received == len(BODY)


def test_a_chunked_body_is_read_through_httpx() -> None:
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(BODY[i : i + 50_000]), BODY[i : i + 50_000])
        for i in range(0, len(BODY), 50_000)
    )
    answer = sending(head(Transfer_Encoding="chunked"), chunks + b"0\r\n\r\n")
    with RawServer(answer) as server, client(server) as api:
        data, download, _ = read_all(api)
    assert data == BODY and download._off_socket is None
