"""The async client's own HTTP/1.1 layer (api/async_transport.py) against a raw socket.

What it must parse (chunks with extensions and trailers, interim 1xx answers), what
it must refuse (ambiguous framing, oversized heads and chunk lines, a body longer
than it said), when it keeps a connection and when it must not (``Connection:
close``, bytes nobody asked for, a body not read to its end), and its waits (the
read timeout, a pool of one). Asserts on what each exchange gave, never on time.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from orchestrator.api.async_transport import LeanTransport
from orchestrator.api.http11 import MAX_HEAD_BYTES

from .raw_http import RawServer, head

BODY = b'{"id": "batch_abc", "object": "batch"}'
pytestmark = pytest.mark.timeout(60)


def read_request(conn: socket.socket) -> bytes:
    """The next request's head on a kept-alive connection (b"" once the client hung up)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(4096)
        if not more:
            return b""
        data += more
    return data


def exchange(
    url: str,
    count: int = 1,
    *,
    connections: int = 4,
    read: float = 5.0,
    method: str = "GET",
    tls: Callable[[], ssl.SSLContext] | None = None,
) -> list[tuple[int, bytes] | BaseException]:
    """``count`` requests one after another on one transport: each one's status and
    body, or what it raised."""

    async def run() -> list[tuple[int, bytes] | BaseException]:
        transport = LeanTransport(tls, connections)
        timeout = {"connect": 5.0, "read": read, "write": 5.0, "pool": 5.0}
        out: list[tuple[int, bytes] | BaseException] = []
        try:
            for _ in range(count):
                request = httpx.Request(method, url, extensions={"timeout": timeout})
                try:
                    response = await transport.handle_async_request(request)
                    try:
                        body = b"".join([piece async for piece in response.aiter_raw()])
                    finally:
                        await response.aclose()
                    out.append((response.status_code, body))
                except httpx.HTTPError as exc:
                    out.append(exc)
        finally:
            await transport.aclose()
        return out

    return asyncio.run(run())


def connections_of(server: RawServer) -> int:
    return len(server._threads)


def test_answers_on_one_connection_kept_alive() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        while True:
            conn.sendall(head(Content_Length=str(len(BODY))) + BODY)
            if not read_request(conn):
                return

    with RawServer(answer) as server:
        got = exchange(server.url + "/batches/batch_abc", 3)
        assert got == [(200, BODY)] * 3
        assert connections_of(server) == 1


def test_plain_http_never_builds_a_tls_context() -> None:
    built: list[ssl.SSLContext] = []

    def make_tls() -> ssl.SSLContext:  # ~20-60 ms of CPU: only for an https origin
        built.append(ssl.create_default_context())
        return built[-1]

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length=str(len(BODY))) + BODY)

    with RawServer(answer) as server:
        assert exchange(server.url + "/batches/batch_abc", tls=make_tls) == [(200, BODY)]
    assert built == []


def test_connection_close_opens_a_new_connection_for_the_next() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length=str(len(BODY)), Connection="close") + BODY)

    with RawServer(answer) as server:
        assert exchange(server.url, 2) == [(200, BODY)] * 2
        assert connections_of(server) == 2


def test_a_chunked_answer_with_extensions_and_trailers_is_read_whole() -> None:
    wire = b"5;ext=1\r\n" + BODY[:5] + b"\r\n" + b"%x\r\n" % (len(BODY) - 5) + BODY[5:]
    wire += b"\r\n0\r\nX-Trailer: yes\r\n\r\n"

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        while True:
            conn.sendall(head(Transfer_Encoding="chunked"))
            for i in range(0, len(wire), 3):  # in pieces that split every line
                conn.sendall(wire[i : i + 3])
            if not read_request(conn):
                return

    with RawServer(answer) as server:
        assert exchange(server.url, 2) == [(200, BODY)] * 2
        assert connections_of(server) == 1


def test_an_interim_answer_is_skipped() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + head(Content_Length="2") + b"{}")

    with RawServer(answer) as server:
        assert exchange(server.url) == [(200, b"{}")]


def test_an_answer_until_the_close_is_read_to_the_close() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + BODY)

    with RawServer(answer) as server:
        assert exchange(server.url, 2) == [(200, BODY)] * 2
        assert connections_of(server) == 2


@pytest.mark.parametrize(
    "wire",
    [
        head(Content_Length="2", Transfer_Encoding="chunked") + b"{}",
        head(Content_Length="2") + b"{}extra",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        head(Content_Length="-1"),
        head(Transfer_Encoding="gzip, chunked"),
        head(Transfer_Encoding="chunked") + b"1" * 2000,
        head(Transfer_Encoding="chunked") + b"zz\r\n",
        head(Transfer_Encoding="chunked") + b"2\r\n{}XX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 10),
        b"HTTP/1.1 200 OK\r\n X-Folded: yes\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
    ids=[
        "length-and-chunked",
        "longer-than-length",
        "two-lengths",
        "negative-length",
        "other-encoding",
        "endless-size-line",
        "bad-size",
        "chunk-without-crlf",
        "huge-head",
        "folded-header",
        "not-http-1",
        "switching",
    ],
)
def test_ambiguous_or_oversized_framing_is_a_protocol_error(wire: bytes) -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(wire)
        stop.wait(30)

    with RawServer(answer) as server:
        (got,) = exchange(server.url, read=30.0)
    assert isinstance(got, httpx.RemoteProtocolError), got


def test_a_cut_body_is_an_error_never_a_short_answer() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length="100") + BODY)  # then closes

    with RawServer(answer) as server:
        (got,) = exchange(server.url)
    assert isinstance(got, httpx.RemoteProtocolError | httpx.ReadError), got


def test_a_server_silent_after_the_head_is_a_read_timeout() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length="100") + BODY[:5])
        stop.wait(30)

    with RawServer(answer) as server:
        (got,) = exchange(server.url, read=0.3)
    assert isinstance(got, httpx.ReadTimeout), got


def test_bytes_nobody_asked_for_end_the_connection() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length=str(len(BODY))) + BODY)
        stop.wait(0.2)
        conn.sendall(head(Content_Length="2") + b"{}")  # unasked: must not answer the next
        stop.wait(30)

    async def run(url: str) -> list[bytes]:
        transport = LeanTransport(None, 4)
        bodies = []
        try:
            for _ in range(2):
                response = await transport.handle_async_request(httpx.Request("GET", url))
                bodies.append(await response.aread())
                await response.aclose()
                await asyncio.sleep(0.5)  # the unasked bytes arrive meanwhile
        finally:
            await transport.aclose()
        return bodies

    with RawServer(answer) as server:
        assert asyncio.run(run(server.url)) == [BODY, BODY]  # the second on a new connection
        assert connections_of(server) == 2


def test_a_body_left_unread_closes_its_connection() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length="100000") + b" " * 1000)
        stop.wait(30)

    async def run(url: str) -> bool:
        transport = LeanTransport(None, 4)
        try:
            response = await transport.handle_async_request(httpx.Request("GET", url))
            await response.aclose()  # without reading: the connection cannot be reused
            return not transport._idle.get((b"http", b"127.0.0.1", response.url.port or 0))
        finally:
            await transport.aclose()

    with RawServer(answer) as server:
        assert asyncio.run(run(server.url))


def test_a_pool_of_one_lends_its_connection_in_turn() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        while True:
            conn.sendall(head(Content_Length=str(len(BODY))) + BODY)
            if not read_request(conn):
                return

    async def run(url: str) -> list[bytes]:
        transport = LeanTransport(None, 1)

        async def one() -> bytes:
            response = await transport.handle_async_request(httpx.Request("GET", url))
            try:
                return await response.aread()
            finally:
                await response.aclose()

        try:
            return list(await asyncio.gather(*(one() for _ in range(5))))
        finally:
            await transport.aclose()

    with RawServer(answer) as server:
        assert asyncio.run(run(server.url)) == [BODY] * 5
        assert connections_of(server) == 1


def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (got,) = exchange(f"http://127.0.0.1:{port}/v1")
    assert isinstance(got, httpx.ConnectError), got


def test_the_request_goes_out_as_asked() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length="2") + b"{}")

    with RawServer(answer) as server:
        exchange(server.url + "/batches/batch_abc/cancel?api-version=1", method="POST")
    assert server.requests == [b"POST /v1/batches/batch_abc/cancel?api-version=1 HTTP/1.1"]


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for localhost and its key, made by the openssl command."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a certificate")
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_https_answers_are_read_over_tls_and_the_connection_kept(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    made: list[ssl.SSLContext] = []  # the context, made on the first https connection

    def make_tls() -> ssl.SSLContext:
        made.append(trusting)
        return trusting

    async def run() -> tuple[list[bytes], int, BaseException | None]:
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                while await reader.readuntil(b"\r\n\r\n"):
                    writer.write(head(Content_Length=str(len(BODY))) + BODY)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                writer.close()  # the client hung up (or refused our certificate)

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=served)
        port = server.sockets[0].getsockname()[1]
        bodies = []
        refused: BaseException | None = None
        try:
            transport = LeanTransport(make_tls, 4)
            for _ in range(2):
                response = await transport.handle_async_request(
                    httpx.Request("GET", f"https://localhost:{port}/v1/batches/batch_abc")
                )
                bodies.append(await response.aread())
                await response.aclose()
            await transport.aclose()
            untrusting = LeanTransport(ssl.create_default_context(), 4)
            try:
                await untrusting.handle_async_request(
                    httpx.Request("GET", f"https://localhost:{port}/v1")
                )
            except httpx.ConnectError as exc:
                refused = exc
            await untrusting.aclose()
        finally:
            server.close()
        return bodies, connections, refused

    bodies, connections, refused = asyncio.run(run())
    assert bodies == [BODY, BODY] and connections == 1 and made == [trusting]
    assert isinstance(refused, httpx.ConnectError)  # a certificate not trusted: no exchange
