"""The async client (the worker's) against a real socket that misbehaves.

The same raw-socket server and the same answers as test_hostile_http.py: a
trickle is cut at the deadline, a body at the cap, a gzip bomb in bounded
memory, a call blocked in a read ends on ``abort()``, and the key is never in
an error. Asserts on how each call ended, never on how long it took.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import tracemalloc
import zlib
from typing import Any

import orjson
import pytest

from orchestrator.api import ApiAborted, ApiAnswerTooLarge, ApiTransportError, RetryLater
from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiResult, ApiSettings
from orchestrator.api.errors import ApiRejectedError
from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy, TransportFailure
from orchestrator.metrics import Metrics
from orchestrator.secret import Secret
from tests.operators.test_metrics import requests_counted

from .raw_http import RawServer, head, trickle

KEY = "sk-hostile-async-0123456789"
BATCH = orjson.dumps({"id": "batch_abc", "object": "batch", "status": "in_progress"})
pytestmark = pytest.mark.timeout(90)


def client(server: RawServer, **settings: Any) -> AsyncBatchApiClient:
    return AsyncBatchApiClient(
        ApiSettings(api_key=Secret(KEY), base_url=server.url, **settings),
        policy=RetryPolicy(max_in_process_attempts=1),
        clock=ManualClock(),
    )


def retrieve(api: AsyncBatchApiClient, batch_id: str = "batch_abc") -> ApiResult:
    async def call() -> ApiResult:
        try:
            return await api.retrieve(batch_id)
        finally:
            await api.aclose()

    return asyncio.run(call())


def failure_of(server: RawServer, **settings: Any) -> ApiTransportError:
    with pytest.raises(RetryLater) as info:
        retrieve(client(server, **settings))
    cause = info.value.cause
    assert isinstance(cause, ApiTransportError)
    return cause


def test_an_answer_is_read_and_the_connection_kept_for_the_next() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length=str(len(BATCH))) + BATCH)

    with RawServer(answer) as server:
        result = retrieve(client(server))
    assert result.data["id"] == "batch_abc" and result.status == 200


def test_an_answer_trickled_a_byte_a_second_is_cut_at_the_deadline() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length=str(len(BATCH))))
        trickle(conn, stop, BATCH, every=1.0)  # each byte within the read timeout

    with RawServer(answer) as server:
        error = failure_of(server, deadline=0.5, read_timeout=3.0)
    assert error.kind is TransportFailure.TIMEOUT
    assert "deadline of 0.5s" in str(error) and "api_deadline" in str(error)


def test_headers_trickled_a_byte_at_a_time_are_cut_at_the_deadline() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        trickle(conn, stop, b"HTTP/1.1 200 OK\r\n" + b"X-Slow: y\r\n" * 10_000, every=0.05)

    with RawServer(answer) as server:
        error = failure_of(server, deadline=0.5, read_timeout=3.0)
    assert "deadline of 0.5s" in str(error)


def test_a_chunked_answer_that_never_ends_stops_at_the_cap() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Transfer_Encoding="chunked"))
        chunk = b"%x\r\n%s\r\n" % (64 << 10, b" " * (64 << 10))
        for _ in range(16 << 10):  # up to 1 GB, unless the client hangs up first
            if stop.is_set():
                return
            conn.sendall(chunk)

    with (
        RawServer(answer) as server,
        pytest.raises(ApiAnswerTooLarge, match="cap of 1048576 bytes"),
    ):
        retrieve(client(server, max_answer_bytes=1 << 20))


def test_a_gzip_bomb_as_a_batch_object_is_refused_in_bounded_memory() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    spaces = b" " * (1 << 20)
    parts = [compressor.compress(BATCH[:-1])] + [compressor.compress(spaces) for _ in range(64)]
    bomb = b"".join(parts) + compressor.compress(b"}") + compressor.flush()

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Encoding="gzip", Content_Length=str(len(bomb))) + bomb)

    tracemalloc.start()
    try:
        with (
            RawServer(answer) as server,
            pytest.raises(ApiAnswerTooLarge, match="api_max_answer_bytes"),
        ):
            retrieve(client(server))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # the 8 MiB cap and some pieces, not the 64 MB


def test_a_content_length_that_lies_is_a_cut_answer() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length="1000") + BATCH)  # then closes

    with RawServer(answer) as server:
        error = failure_of(server)
    assert error.kind is TransportFailure.READ


@pytest.mark.parametrize("length", ["\u00b2", "\u0663", "-1"])
def test_a_204_whose_content_length_is_not_ascii_digits_is_a_protocol_failure(
    length: str,
) -> None:
    """The lean parser skipped the check for a 204 (no body by its status): `²` reached
    bodies.declared_length and int() raised ValueError out of the client. The sync
    client (h11) refuses such an answer."""

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(f"HTTP/1.1 204 No Content\r\nContent-Length: {length}\r\n\r\n".encode())

    with RawServer(answer) as server:
        error = failure_of(server)
    assert "Content-Length" in str(error)


def test_a_request_cut_at_the_deadline_is_counted_as_a_transport_error() -> None:
    """The lean exchange ends it with TimeoutError, which the metrics did not count."""

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        trickle(conn, stop, head(Content_Length=str(len(BATCH))) + BATCH, every=1.0)

    metrics = Metrics()
    with RawServer(answer) as server:
        api = AsyncBatchApiClient(
            ApiSettings(api_key=Secret(KEY), base_url=server.url, deadline=0.5, read_timeout=3),
            policy=RetryPolicy(max_in_process_attempts=1),
            wrap=metrics.metered,
            clock=ManualClock(),
        )
        with pytest.raises(RetryLater):
            retrieve(api)
    assert requests_counted(metrics) == {"retrieve transport_error": 1}


def test_an_error_that_reflects_the_key_is_scrubbed() -> None:
    body = orjson.dumps({"error": {"message": f"bad request with key {KEY}", "type": "x"}})

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head("400 Bad Request", Content_Length=str(len(body))) + body)

    with RawServer(answer) as server, pytest.raises(ApiRejectedError) as info:
        retrieve(client(server))
    assert KEY not in str(info.value) and KEY not in repr(info.value.__dict__)


def test_abort_from_another_thread_ends_a_call_blocked_in_a_read() -> None:
    def stall(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length="500"))
        stop.wait(60)  # nothing more until the test ends

    raised: list[BaseException] = []
    with RawServer(stall) as server:
        api = client(server, read_timeout=60.0, deadline=60.0)

        def run() -> None:
            try:
                retrieve(api)
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert server.requested.wait(30)
        api.abort()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert len(raised) == 1 and isinstance(raised[0], ApiAborted), raised
        with pytest.raises(ApiAborted):  # and new calls are refused, nothing sent
            retrieve(api)
    assert len(server.requests) == 1
