"""Where a downloaded file ends, and whether anything vouches for that end.

A cut that decodes cleanly must never read as the whole file (it would be marked done
short, and `cleanup` could delete the server's copy); a whole file must never read as
a cut (it would stay pending for ever). Over HTTP from a raw server on loopback, or
through the client's transport with the ingest tests' helpers.
"""

from __future__ import annotations

import socket
import threading
import zlib

import httpx
import pytest

from orchestrator.api import ApiSettings, BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.core.harvest import FileState
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.database import Database
from orchestrator.secret import Secret
from tests.integration.raw_http import RawServer
from tests.integration.test_ingest import BATCH, ingest_with, line_errors, result_line, the_file

FIRST = b"".join(b'{"custom_id": "a%d"}\n' % i for i in range(50))
SECOND = b"".join(b'{"custom_id": "b%d"}\n' % i for i in range(50))


def gzipped(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return compressor.compress(data) + compressor.flush()


def download(head: bytes, body: bytes) -> tuple[bytes, bool]:
    """What the client reads of one answer, and whether it says the end was vouched for."""

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head + body)

    with (
        RawServer(answer) as server,
        BatchApiClient(
            ApiSettings(api_key=Secret("sk-x-0123456789"), base_url=server.url),
            policy=RetryPolicy(max_in_process_attempts=1),
            clock=ManualClock(),
        ) as api,
        api.download("file-abc") as got,
    ):
        return b"".join(got.iter_bytes(1 << 16)), got.end_checked


GZIP_UNFRAMED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Encoding: gzip\r\nConnection: close\r\n\r\n"
)


def test_a_gzip_body_without_framing_never_vouches_for_its_end() -> None:
    """A gzip body may be several members and the end of any is a valid end: a body
    cut between two reads exactly as a whole body of one. Only the HTTP framing (a
    length, chunks) vouches; such a file is harvested, never deleted from the server."""
    whole = gzipped(FIRST) + gzipped(SECOND)
    assert download(GZIP_UNFRAMED, whole) == (FIRST + SECOND, False)
    assert download(GZIP_UNFRAMED, gzipped(FIRST)) == (FIRST, False)  # whole, or cut?
    framed = GZIP_UNFRAMED.replace(
        b"Connection: close", b"Content-Length: %d" % len(gzipped(FIRST))
    )
    assert download(framed, gzipped(FIRST)) == (FIRST, True)


def test_chunked_framing_with_a_stale_content_length_is_read_by_its_chunks() -> None:
    """RFC 9112 6.3: with a Transfer-Encoding, a Content-Length is to be ignored (every
    download failed: "body length differs from Content-Length")."""
    framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(FIRST), FIRST)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % len(
        framed
    )
    assert download(head, framed) == (FIRST, True)


@pytest.mark.parametrize("status", [206, 202, 204])
def test_an_answer_other_than_200_is_not_the_file(
    database: Database, clock: ManualClock, status: int
) -> None:
    """A 206 (a proxy's part of the file: we ask for no range) of 3 lines of 10, or an
    empty 202 or 204, was stored as the whole file, done, its end vouched for."""
    part = b"".join(result_line(i) + b"\n" for i in range(1, 4)) if status == 206 else b""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=part, headers={"content-length": str(len(part))})

    outcome = ingest_with(database, clock, handler, attempts=2).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert outcome.state is FileState.PENDING
    assert outcome.error is not None and f"HTTP {status} is not the whole file" in outcome.error
    assert the_file(database).state == "pending"


@pytest.mark.parametrize(
    ("status", "headers", "problem"),
    [
        (206, {"content-range": "bytes 0-9437184/999999999"}, "HTTP 206 is not the whole file"),
        (200, {"content-type": "text/html"}, "an HTML page"),
    ],
)
def test_an_answer_that_is_not_the_file_and_over_the_answer_cap_is_retried(
    database: Database, clock: ManualClock, status: int, headers: dict[str, str], problem: str
) -> None:
    """Past `api_max_answer_bytes` (8 MiB), such an answer was read whole as a JSON
    answer would be: `BodyTooLarge` escaped the client and the harvest, a traceback."""
    body = b"x" * ((8 << 20) + 1)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers=headers)

    outcome = ingest_with(database, clock, handler, attempts=2).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert outcome.state is FileState.PENDING
    assert outcome.error is not None and problem in outcome.error
    assert the_file(database).state == "pending"


@pytest.mark.parametrize("last", [b"garbage", b"\xef\xbb\xbf", b"{oops}"])
def test_a_bad_last_line_of_a_file_whose_end_is_vouched_for_is_a_line_error(
    database: Database, clock: ManualClock, last: bytes
) -> None:
    """With its Content-Length met, a last line that does not parse is no cut: the file
    read it as one at every download and stayed pending for ever."""
    body = result_line(1) + b"\n" + result_line(2) + b"\n" + last

    def handler(request: httpx.Request) -> httpx.Response:
        pieces = [body[i : i + 5] for i in range(0, len(body), 5)]
        return httpx.Response(200, content=iter(pieces), headers={"content-length": str(len(body))})

    outcome = ingest_with(database, clock, handler, attempts=3).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert outcome.state is FileState.DONE and outcome.downloads == 1
    assert (outcome.inserted, outcome.malformed) == (2, 1)
    assert [n for n, _, _ in line_errors(database)] == [3]
