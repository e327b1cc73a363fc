"""The client against a real socket that misbehaves: trickles, stalls, bombs, never ends.

A raw-socket server on 127.0.0.1 (raw_http.py). Each test bounds its server and
asserts on what the call ended with, never on how long it took; where the old
client would have waited for the whole trickle, the test's timeout ends it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from orchestrator.api import (
    ApiAborted,
    ApiAnswerTooLarge,
    ApiSettings,
    ApiTransportError,
    BatchApiClient,
    RetryLater,
)
from orchestrator.cli.main import main
from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy, TransportFailure
from orchestrator.db.database import Database
from orchestrator.db.models import CancelAttempt
from orchestrator.metrics import Metrics
from orchestrator.secret import Secret
from tests.operators.test_metrics import requests_counted

from .raw_http import RawServer, head, trickle

KEY = "sk-hostile-http-0123456789"
BATCH = orjson.dumps({"id": "batch_abc", "object": "batch", "status": "in_progress"})
pytestmark = pytest.mark.timeout(90)


def client(server: RawServer, **settings: Any) -> BatchApiClient:
    return BatchApiClient(
        ApiSettings(api_key=Secret(KEY), base_url=server.url, **settings),
        policy=RetryPolicy(max_in_process_attempts=1),
        clock=ManualClock(),
    )


def failure_of(server: RawServer, **settings: Any) -> ApiTransportError:
    with pytest.raises(RetryLater) as info, client(server, **settings) as api:
        api.retrieve("batch_abc")
    cause = info.value.cause
    assert isinstance(cause, ApiTransportError)
    return cause


def test_an_answer_trickled_a_byte_a_second_is_cut_at_the_deadline() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length=str(len(BATCH))))
        trickle(conn, stop, BATCH, every=1.0)  # 38 s of trickle, each byte within the read timeout

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


def test_a_request_cut_at_the_deadline_is_counted_as_a_transport_error() -> None:
    """The deadline ends it with LimitReached, which the metrics did not count."""

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        trickle(conn, stop, head(Content_Length=str(len(BATCH))) + BATCH, every=1.0)

    metrics = Metrics()
    with (
        RawServer(answer) as server,
        BatchApiClient(
            ApiSettings(api_key=Secret(KEY), base_url=server.url, deadline=0.5, read_timeout=3),
            policy=RetryPolicy(max_in_process_attempts=1),
            transport=metrics.transport(),
            clock=ManualClock(),
        ) as api,
        pytest.raises(RetryLater),
    ):
        api.retrieve("batch_abc")
    assert requests_counted(metrics) == {"retrieve transport_error": 1}


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
        client(server, max_answer_bytes=1 << 20) as api,
        pytest.raises(ApiAnswerTooLarge, match="cap of 1048576 bytes"),
    ):
        api.retrieve("batch_abc")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A Batch object padded with 64 MB of spaces, gzipped: about 64 KB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    spaces = b" " * (1 << 20)
    parts = [compressor.compress(BATCH[:-1])]
    parts += [compressor.compress(spaces) for _ in range(64)]
    return b"".join(parts) + compressor.compress(b"}") + compressor.flush()


def test_a_gzip_bomb_as_a_batch_object_is_refused_in_bounded_memory(bomb: bytes) -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Encoding="gzip", Content_Length=str(len(bomb))) + bomb)

    tracemalloc.start()
    try:
        with (
            RawServer(answer) as server,
            client(server) as api,
            pytest.raises(ApiAnswerTooLarge, match="api_max_answer_bytes"),
        ):
            api.retrieve("batch_abc")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # the 8 MiB cap and some pieces, not the gigabyte


def gzipped(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return compressor.compress(data) + compressor.flush()


def served_file(body: bytes) -> Any:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Encoding="gzip", Content_Length=str(len(body))) + body)

    return answer


def test_a_file_gzipped_in_several_members_is_read_whole() -> None:
    """RFC 1952: a gzip file may be members one after another (what `cat a.gz b.gz`
    makes); zlib stops at the first one's end, and the rest would be dropped unseen."""
    first, second = b'{"custom_id": "a"}\n', b'{"custom_id": "b"}\n'
    with (
        RawServer(served_file(gzipped(first) + gzipped(second))) as server,
        client(server) as api,
        api.download("file-abc") as download,
    ):
        assert b"".join(download.iter_bytes(7)) == first + second


@pytest.mark.parametrize("after", [b"\x00" * 8, b"junk", b"\x1f"])
def test_bytes_after_a_gzip_body_s_end_are_left_unread(after: bytes) -> None:
    """Padding after the last member (a proxy's zeros) is not a member: left unread, as
    gzip.decompress leaves it, not a failure at every download."""
    lines = b'{"custom_id": "a"}\n'
    with (
        RawServer(served_file(gzipped(lines) + after)) as server,
        client(server) as api,
        api.download("file-abc") as download,
    ):
        assert b"".join(download.iter_bytes(7)) == lines


def test_a_gzip_stream_cut_inside_whole_http_framing_is_a_cut_download() -> None:
    """The HTTP body is whole (its Content-Length is what was sent) but the gzip stream
    inside it stops short: the file is not whole, and must not read as if it were."""
    lines = b"".join(b'{"custom_id": "c%d"}\n' % i for i in range(2000))
    cut = gzipped(lines)[:-30]  # the trailer and the end of the deflate stream are gone
    with (
        RawServer(served_file(cut)) as server,
        client(server) as api,
        pytest.raises(ApiTransportError) as info,
        api.download("file-abc") as download,
    ):
        for _ in download.iter_bytes(1 << 16):
            pass
    assert info.value.kind is TransportFailure.READ
    assert "ends before its compressed data does" in str(info.value)


def test_headers_of_a_megabyte_are_a_protocol_failure() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")

    with RawServer(answer) as server:
        error = failure_of(server)
    assert error.kind in (TransportFailure.READ, TransportFailure.PROTOCOL)


def test_a_content_length_that_lies_is_a_cut_answer() -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length="1000") + BATCH)  # then closes

    with RawServer(answer) as server:
        error = failure_of(server)
    assert error.kind is TransportFailure.READ


# -- abort: what SIGTERM does to a call blocked in a read --------------------------------


def stall_after(first: bytes) -> Any:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(first)
        stop.wait(60)  # say nothing more until the test ends

    return answer


def in_thread(target: Any) -> tuple[threading.Thread, list[BaseException]]:
    raised: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def test_abort_ends_a_call_blocked_in_a_read() -> None:
    with (
        RawServer(stall_after(head(Content_Length="500"))) as server,
        client(server, read_timeout=60.0, deadline=60.0) as api,
    ):
        thread, raised = in_thread(lambda: api.retrieve("batch_abc"))
        assert server.requested.wait(30)
        api.abort()
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], ApiAborted), raised


def test_abort_ends_a_download_stalled_mid_body() -> None:
    first_chunk = threading.Event()
    with (
        RawServer(stall_after(head(Content_Length="100000") + b"x" * 1000)) as server,
        client(server, read_timeout=60.0) as api,
    ):

        def consume() -> None:
            with api.download("file-abc") as download:
                for _ in download.iter_bytes(100):
                    first_chunk.set()

        thread, raised = in_thread(consume)
        assert first_chunk.wait(30)
        api.abort()
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], ApiAborted), raised


# -- SIGTERM to a real process ------------------------------------------------------------


@pytest.mark.parametrize(("command", "record"), [("worker", "cancel"), ("reconcile", "track")])
def test_sigterm_ends_a_process_waiting_on_a_trickling_server(
    command: str,
    record: str,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head(Content_Length="300"))
        trickle(conn, stop, b" " * 300, every=0.5)  # 150 s; the deadline is an hour

    with RawServer(answer) as server:
        env = {
            **os.environ,
            "ORCHESTRATOR_DATABASE_URL": sqlite_url,
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": KEY,
            "ORCHESTRATOR_CONFIG": "/dev/null",
            "ORCHESTRATOR_API_DEADLINE": "3600",
        }
        for name in ("ORCHESTRATOR_DATABASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
            monkeypatch.setenv(name, env[name])
        monkeypatch.setenv("ORCHESTRATOR_CONFIG", "/dev/null")
        assert main([record, "batch_trickle"]) == 0
        log = tmp_path / "process.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", command],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            assert server.requested.wait(60), log.read_text()
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=30)  # the trickle would take 150 s
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log.read_text()
    assert returncode == 0, text
    assert "Traceback" not in text
    if command == "worker":
        db = Database.connect(sqlite_url)
        try:
            with db.transaction() as session:
                errors = list(session.scalars(select(CancelAttempt.error)))
        finally:
            db.dispose()
        assert errors and "abandoned: the process is stopping" in (errors[-1] or "")
