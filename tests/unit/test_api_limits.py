"""What the server sends is bounded: size, time, encoding; and abort() ends calls.

MockTransport bodies and a fake monotonic clock that moves as chunks are read,
so every time limit here is exact and nothing sleeps. The same limits against
a real socket (trickled headers, a thread blocked in a read) are in
tests/integration/test_hostile_http.py.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Iterator
from email.utils import format_datetime
from functools import cache
from typing import Any

import httpx
import orjson
import pytest

from orchestrator.api import (
    ApiAborted,
    ApiAnswerTooLarge,
    ApiProtocolError,
    ApiRejectedError,
    ApiSettings,
    ApiTransportError,
    BatchApiClient,
    RetryLater,
)
from orchestrator.api.bodies import PIECE, declared_length
from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy, TransportFailure
from orchestrator.errors import ConfigError
from orchestrator.secret import Secret
from orchestrator.settings import load_settings

KEY = "sk-test-limits-0123456789"
BATCH = orjson.dumps({"id": "batch_abc", "object": "batch", "status": "in_progress"})


class FakeTime:
    """A monotonic clock that moves only when a body chunk is produced."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Body(httpx.SyncByteStream):
    """Chunks produced one by one, each ``seconds_per_chunk`` after the last."""

    def __init__(self, chunks: Iterator[bytes], time: FakeTime, seconds_per_chunk: float) -> None:
        self.chunks = chunks
        self.time = time
        self.step = seconds_per_chunk
        self.produced = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.time.now += self.step
            self.produced += 1
            yield chunk


@cache
def bomb(size: int = 256 << 20) -> bytes:
    """``size`` bytes of zeros, gzipped: about 250 KB on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + compressor.flush()


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def client(
    handler: Any, time: FakeTime | None = None, attempts: int = 3, **settings: Any
) -> BatchApiClient:
    return BatchApiClient(
        ApiSettings(api_key=Secret(KEY), base_url="https://api.test/v1", **settings),
        policy=RetryPolicy(max_in_process_attempts=attempts),
        transport=httpx.MockTransport(handler),
        sleep=lambda _s: None,
        clock=ManualClock(),
        random=lambda: 0.0,
        monotonic=time or FakeTime(),
    )


class Counting:
    def __init__(self, make: Any) -> None:
        self.make = make
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response: httpx.Response = self.make(request)
        return response


# -- size -------------------------------------------------------------------------


def test_a_gzip_bomb_as_a_batch_object_is_refused_naming_the_cap() -> None:
    handler = Counting(
        lambda _r: httpx.Response(
            200,
            headers={"content-encoding": "gzip"},
            stream=Body(pieces(bomb(), 64 << 10), FakeTime(), 0),
        )
    )
    tracemalloc.start()
    try:
        with pytest.raises(ApiAnswerTooLarge) as info:
            client(handler).retrieve("batch_abc")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "8388608 bytes" in str(info.value)
    assert "api_max_answer_bytes" in str(info.value)
    assert info.value.cap == 8 << 20
    assert len(handler.requests) == 1  # the same request would get the same answer
    assert peak < 40 << 20  # the cap and a piece, not the 256 MB the bomb holds
    assert handler.requests[0].headers["accept-encoding"] == "gzip"


def test_an_answer_declaring_more_than_the_cap_is_refused_unread() -> None:
    body = Body(iter([BATCH]), FakeTime(), 0)
    handler = Counting(
        lambda _r: httpx.Response(200, headers={"content-length": str(1 << 30)}, stream=body)
    )
    with pytest.raises(ApiAnswerTooLarge, match="declares 1073741824 bytes"):
        client(handler, max_answer_bytes=1 << 20).retrieve("batch_abc")
    assert body.produced == 0


@pytest.mark.parametrize("length", ["\u00b2", "\u0663", "\U0001d7ea", "9" * 5000, "-1", ""])
def test_a_content_length_of_anything_but_a_few_ascii_digits_declares_nothing(
    length: str,
) -> None:
    """str.isdigit() takes `²` (int() then raises ValueError) and `٣` (int() reads 3);
    int() refuses 5000 digits. The body is still read under the cap, as without one."""
    assert declared_length({"content-length": length}) is None


def test_a_content_length_of_ascii_digits_is_declared() -> None:
    assert declared_length({"content-length": " 1073741824 "}) == 1 << 30


def test_an_error_body_is_read_only_as_far_as_its_excerpt() -> None:
    endless = Body((b"<p>oops</p>" * 1000 for _ in range(10_000)), FakeTime(), 0)
    handler = Counting(lambda _r: httpx.Response(400, stream=endless))
    with pytest.raises(ApiRejectedError, match="oops"):
        client(handler).retrieve("batch_abc")
    assert endless.produced < 10


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip", "compress"])
def test_a_content_encoding_we_did_not_ask_for_is_refused(encoding: str) -> None:
    handler = Counting(
        lambda _r: httpx.Response(
            200, headers={"content-encoding": encoding}, stream=Body(iter([BATCH]), FakeTime(), 0)
        )
    )
    with pytest.raises(RetryLater) as info:
        client(handler).retrieve("batch_abc")
    cause = info.value.cause
    assert isinstance(cause, ApiProtocolError)
    assert "was not asked for" in str(cause)


def test_gzip_and_deflate_answers_are_read() -> None:
    for encoding, data in [
        ("gzip", gzip.compress(BATCH)),
        ("deflate", zlib.compress(BATCH)),
        ("deflate", zlib.compress(BATCH)[2:-4]),  # raw deflate, as some servers send
    ]:
        handler = Counting(
            lambda _r, e=encoding, d=data: httpx.Response(
                200, headers={"content-encoding": e}, stream=Body(iter([d]), FakeTime(), 0)
            )
        )
        assert client(handler).retrieve("batch_abc").data["id"] == "batch_abc"


# -- time ------------------------------------------------------------------------------


def test_an_answer_trickled_past_the_deadline_is_cut_naming_it() -> None:
    time = FakeTime()
    handler = Counting(
        lambda _r: httpx.Response(200, stream=Body(pieces(BATCH, 1), time, seconds_per_chunk=1))
    )
    with pytest.raises(RetryLater) as info:
        client(handler, time, deadline=10.0, read_timeout=3.0).retrieve("batch_abc")
    cause = info.value.cause
    assert isinstance(cause, ApiTransportError)
    assert cause.kind is TransportFailure.TIMEOUT
    assert cause.timeout == 10.0
    assert "deadline of 10s" in str(cause)
    assert "api_deadline" in str(cause)
    assert len(handler.requests) == 3  # a timeout is retried, each attempt with its own deadline


def test_an_answer_within_the_deadline_is_accepted() -> None:
    time = FakeTime()
    handler = Counting(
        lambda _r: httpx.Response(200, stream=Body(pieces(BATCH, 1), time, seconds_per_chunk=0.1))
    )
    assert client(handler, time, deadline=60.0).retrieve("batch_abc").attempts == 1


def download_of(
    time: FakeTime, chunks: Iterator[bytes], seconds_per_chunk: float, **settings: Any
) -> list[bytes]:
    handler = Counting(lambda _r: httpx.Response(200, stream=Body(chunks, time, seconds_per_chunk)))
    with client(handler, time, **settings).download("file-abc") as download:
        return list(download.iter_bytes(4096))


def test_a_download_slower_than_the_minimum_throughput_is_cut() -> None:
    with pytest.raises(ApiTransportError) as info:
        download_of(
            FakeTime(),
            (b"x" for _ in range(1000)),
            seconds_per_chunk=1.0,
            download_min_bytes_per_second=100,
            download_throughput_window=30.0,
        )
    assert info.value.kind is TransportFailure.TIMEOUT
    assert "slower than 100 bytes/s over 30s" in str(info.value)
    assert "download_min_bytes_per_second" in str(info.value)


def test_a_long_download_at_a_steady_speed_has_no_deadline() -> None:
    # 2,000 s in all, far past the JSON deadline, at 64 KB/s against a 10 KB/s minimum
    got = download_of(
        FakeTime(),
        (b"y" * (64 << 10) for _ in range(2000)),
        seconds_per_chunk=1.0,
        deadline=60.0,
        download_min_bytes_per_second=10_000,
        download_throughput_window=60.0,
    )
    assert sum(map(len, got)) == 2000 * (64 << 10)


def test_a_gzip_bomb_as_file_content_is_decoded_a_piece_at_a_time() -> None:
    time = FakeTime()
    handler = Counting(
        lambda _r: httpx.Response(
            200,
            headers={"content-encoding": "gzip"},
            stream=Body(pieces(bomb(), 64 << 10), time, 0),
        )
    )
    total = 0
    tracemalloc.start()
    try:
        with client(handler, time).download("file-abc") as download:
            for chunk in download.iter_bytes(1 << 20):
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 256 << 20
    assert peak < 4 * (1 << 20) + 4 * PIECE  # a chunk or two, never a raw read's worth decoded


def test_an_html_page_instead_of_the_file_is_not_taken_for_the_file() -> None:
    page = b"<html><body>Please sign in</body></html>"
    handler = Counting(
        lambda _r: httpx.Response(
            200,
            headers={"content-type": "text/html; charset=utf-8"},
            stream=Body(iter([page]), FakeTime(), 0),
        )
    )
    with pytest.raises(RetryLater) as info, client(handler).download("file-abc"):
        pass
    cause = info.value.cause
    assert isinstance(cause, ApiProtocolError)
    assert "HTML page" in str(cause)
    assert "Please sign in" in str(cause)


# -- abort -------------------------------------------------------------------------------


def test_after_abort_no_call_is_sent() -> None:
    handler = Counting(lambda _r: httpx.Response(200, content=BATCH))
    api = client(handler)
    api.abort()
    with pytest.raises(ApiAborted, match="the process is stopping"):
        api.retrieve("batch_abc")
    with pytest.raises(ApiAborted), api.download("file-abc"):
        pass
    assert handler.requests == []


def test_abort_during_the_retry_wait_ends_the_call_without_another_attempt() -> None:
    # (the default wait is the interrupter's, which an abort wakes at once)
    handler = Counting(lambda _r: httpx.Response(503, headers={"retry-after": "5"}))
    clients: list[BatchApiClient] = []
    api = BatchApiClient(
        ApiSettings(api_key=Secret(KEY), base_url="https://api.test/v1"),
        policy=RetryPolicy(),
        transport=httpx.MockTransport(handler),
        clock=ManualClock(),
        sleep=lambda _s: clients[0].abort(),  # SIGTERM arrives during the wait
    )
    clients.append(api)
    with pytest.raises(ApiAborted):
        api.retrieve("batch_abc")
    assert len(handler.requests) == 1


def test_abort_mid_download_ends_it_as_aborted() -> None:
    api: BatchApiClient | None = None

    def chunks() -> Iterator[bytes]:
        yield b'{"custom_id": "a"}\n'
        assert api is not None
        api.abort()  # SIGTERM arrives while the body is streaming
        yield b'{"custom_id": "b"}\n'
        yield b'{"custom_id": "c"}\n'

    handler = Counting(lambda _r: httpx.Response(200, stream=Body(chunks(), FakeTime(), 0)))
    api = client(handler)
    with pytest.raises(ApiAborted), api.download("file-abc") as download:
        list(download.iter_bytes(1))


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ORCHESTRATOR_API_DEADLINE", "0"),
        ("ORCHESTRATOR_API_DEADLINE", "86400"),
        ("ORCHESTRATOR_API_MAX_ANSWER_BYTES", "100"),
        ("ORCHESTRATOR_API_MAX_ANSWER_BYTES", "1e9"),
        ("ORCHESTRATOR_INGEST_MAX_LINE_BYTES", "1024"),
        ("ORCHESTRATOR_DOWNLOAD_MIN_BYTES_PER_SECOND", "0"),
        ("ORCHESTRATOR_DOWNLOAD_THROUGHPUT_WINDOW", "nan"),
    ],
)
def test_limits_out_of_range_are_refused_naming_the_setting(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(environ={variable: value, "ORCHESTRATOR_CONFIG": "/dev/null"})


def test_the_limits_reach_the_client_from_the_settings() -> None:
    from orchestrator.cli.wiring import build_client

    settings = load_settings(
        environ={
            "OPENAI_API_KEY": KEY,
            "ORCHESTRATOR_CONFIG": "/dev/null",
            "ORCHESTRATOR_API_DEADLINE": "7.5",
            "ORCHESTRATOR_API_MAX_ANSWER_BYTES": "100000",
            "ORCHESTRATOR_DOWNLOAD_MIN_BYTES_PER_SECOND": "5000",
            "ORCHESTRATOR_DOWNLOAD_THROUGHPUT_WINDOW": "20",
        }
    )
    with build_client(settings) as api:
        limits = api._settings
        assert (limits.deadline, limits.max_answer_bytes) == (7.5, 100_000)
        assert limits.download_min_bytes_per_second == 5000
        assert limits.download_throughput_window == 20.0


# -- Retry-After that makes no sense ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["-5", "nan", "inf", "-inf", "1e400", "99999999999999", "Fri, 31 Dec 9999 23:59:59 GMT", ""],
)
def test_an_absurd_retry_after_is_ignored_or_capped(value: str) -> None:
    handler = Counting(lambda _r: httpx.Response(429, headers={"retry-after": value}))
    with pytest.raises(RetryLater) as info:
        client(handler).retrieve("batch_abc")
    delay = info.value.delay_s
    assert delay is None or 0 < delay <= RetryPolicy().max_retry_after


def test_a_retry_after_date_in_the_past_is_no_wait() -> None:
    past = format_datetime(ManualClock().now().replace(year=2000), usegmt=True)
    handler = Counting(lambda _r: httpx.Response(429, headers={"retry-after": past}))
    with pytest.raises(RetryLater) as info:
        client(handler).retrieve("batch_abc")
    assert info.value.delay_s is None


def test_a_download_reads_the_socket_a_mebibyte_at_a_time_other_calls_as_httpcore_asks() -> None:
    import httpcore

    from orchestrator.api.download import DOWNLOAD_READ_BYTES
    from orchestrator.api.limits import CallScope, Deadline, Interrupter
    from orchestrator.api.transport import _GuardedStream

    asked: list[int] = []

    class Inner(httpcore.NetworkStream):
        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            asked.append(max_bytes)
            return b"x"

        def get_extra_info(self, info: str) -> Any:
            return None

    stream = _GuardedStream(Inner())
    limit = Deadline(60, lambda: 0.0)
    for read_bytes in (0, DOWNLOAD_READ_BYTES):
        with CallScope(limit, Interrupter(), read_bytes=read_bytes).active():
            stream.read(65536)
    assert asked == [65536, DOWNLOAD_READ_BYTES]
