"""The answer parser of api/http11.py, without sockets: the same answer read whole or
cut anywhere gives the same body, and what it refuses it refuses wherever the cut."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.api.http11 import MAX_CHUNK_LINE, AnswerParser

BODY = b'{"id": "batch_abc", "object": "batch"}'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\n" + BODY[:5] + b"\r\n" + b"%x\r\n" % (len(BODY) - 5) + BODY[5:] + b"\r\n"
    b"0\r\nX-Trailer: yes\r\n\r\n"
)
LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n" + LENGTH


def read(wire: bytes, cuts: list[int]) -> tuple[bytes, AnswerParser]:
    parser = AnswerParser(b"GET")
    body = b""
    start = 0
    for cut in [*cuts, len(wire)]:
        body += b"".join(parser.feed(wire[start:cut]))
        start = cut
    return body, parser


@pytest.mark.parametrize("wire", [CHUNKED, LENGTH, INTERIM], ids=["chunked", "length", "1xx"])
def test_an_answer_cut_anywhere_reads_the_same(wire: bytes) -> None:
    for cut in range(1, len(wire)):
        body, parser = read(wire, [cut])
        assert body == BODY and parser.complete and parser.keep_alive, cut
    body, parser = read(wire, list(range(1, len(wire))))  # a byte at a time
    assert body == BODY and parser.complete


def test_a_body_until_the_close_ends_with_it_and_keeps_nothing_alive() -> None:
    parser = AnswerParser(b"GET")
    assert b"".join(parser.feed(b"HTTP/1.0 200 OK\r\n\r\n" + BODY)) == BODY
    assert not parser.complete
    parser.closed()
    assert parser.complete and not parser.keep_alive


@pytest.mark.parametrize(
    "wire",
    [
        LENGTH[:-3],  # cut short by the close
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 10,
        b"HTTP/1.1 200 OK\r\nContent-",  # in the head
    ],
    ids=["length", "chunked", "head"],
)
def test_a_close_before_the_end_is_an_error(wire: bytes) -> None:
    parser = AnswerParser(b"GET")
    parser.feed(wire)
    with pytest.raises(httpx.RemoteProtocolError):
        parser.closed()


def test_a_chunk_size_line_too_long_is_refused_before_it_ends() -> None:
    parser = AnswerParser(b"GET")
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(httpx.RemoteProtocolError, match="chunk-size"):
        for _ in range(MAX_CHUNK_LINE + 1):
            parser.feed(b"0")


def test_bytes_after_an_answer_are_refused() -> None:
    parser = AnswerParser(b"GET")
    parser.feed(LENGTH)
    with pytest.raises(httpx.RemoteProtocolError):
        parser.feed(b"HTTP/1.1 200 OK\r\n")


def test_no_body_for_head_or_204_whatever_the_length() -> None:
    for method, status in ((b"HEAD", b"200 OK"), (b"GET", b"204 No Content")):
        parser = AnswerParser(method)
        parser.feed(b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\n\r\n")
        assert parser.complete and parser.head is not None


@pytest.mark.parametrize("length", ["\u00b2", "-1", "1e3", "0x10", "9" * 19, "5, 6"])
@pytest.mark.parametrize(("method", "status"), [(b"GET", b"204 No Content"), (b"HEAD", b"200 OK")])
def test_a_bad_content_length_is_refused_whether_or_not_a_body_may_follow(
    method: bytes, status: bytes, length: str
) -> None:
    """A 204 (or an answer to HEAD) skipped the check: `²` reached bodies.declared_length,
    where int() raised ValueError out of the client. h11 refuses it on the sync path."""
    parser = AnswerParser(method)
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: " + length.encode() + b"\r\n\r\n"
    with pytest.raises(httpx.RemoteProtocolError, match="Content-Length"):
        parser.feed(head)


KEY = b"sk-proj-" + b"s3cr3t" * 10


@pytest.mark.parametrize(
    "line",
    [
        b"HTTP/1.1 200 OK " + KEY,  # a good status line, then the key: read as the reason
        b"Bearer " + KEY,  # a status line that is not one
    ],
)
def test_a_bad_status_line_is_quoted_too_little_to_carry_the_key(line: bytes) -> None:
    parser = AnswerParser(b"GET")
    try:
        parser.feed(line.replace(b"HTTP/1.1 200", b"HTTP/1.1 2x0") + b"\r\n\r\n")
    except httpx.RemoteProtocolError as exc:
        assert b"s3cr3t".decode() not in str(exc)
    else:
        raise AssertionError("a bad status line was read")


@pytest.mark.parametrize(
    "line",
    [b"Bearer " + KEY, b"X Echo: Bearer " + KEY, b"Content-Length: " + KEY],
)
def test_a_bad_header_line_never_quotes_the_key_a_server_echoes(line: bytes) -> None:
    """Up to 60 characters of the line were quoted: most of a key, in an error that is
    logged and stored; the scrubbing matches only the whole key."""
    parser = AnswerParser(b"GET")
    with pytest.raises(httpx.RemoteProtocolError) as raised:
        parser.feed(b"HTTP/1.1 200 OK\r\n" + line + b"\r\n\r\n")
    assert "s3cr3t" not in str(raised.value)


def test_a_header_name_or_status_line_that_is_the_key_is_not_quoted() -> None:
    for wire in (KEY + b"\r\n\r\n", b"HTTP/1.1 200 OK\r\nX " + KEY + b": x\r\n\r\n"):
        with pytest.raises(httpx.RemoteProtocolError) as raised:
            AnswerParser(b"GET").feed(wire)
        assert "s3cr3t" not in str(raised.value)
