"""The pure parts of the async client's lean exchange: the request's bytes from a
template, the answer's headers as judging reads them, the body read to its cap."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import httpx
import pytest

from orchestrator.api.answers import HeadAnswer
from orchestrator.api.bodies import BodyTooLarge, UnsupportedEncoding, read_pieces_capped
from orchestrator.api.http11 import Head, RequestTemplate, serialize

HEADERS = httpx.Headers(
    {
        "User-Agent": "orchestrator/test",
        "Accept": "application/json",
        "Accept-Encoding": "gzip",
        "Authorization": "Bearer sk-test",
        "Connection": "keep-alive",
    }
)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    ("base_url", "params"),
    [
        ("http://127.0.0.1:8080/v1", None),
        ("https://api.example.com/v1/", None),
        ("https://x.openai.azure.com/openai", {"api-version": "2024-10-21"}),
    ],
)
def test_a_template_fills_in_the_bytes_httpx_would_send(
    method: str, base_url: str, params: dict[str, str] | None
) -> None:
    template = RequestTemplate(method, base_url, params=params, headers=HEADERS)
    path = "/batches/batch_abc-123/cancel"
    request = httpx.Request(method, base_url.rstrip("/") + path, params=params, headers=HEADERS)
    assert template.fill(path) == serialize(request, request.read())
    url = request.url
    assert template.origin == (url.raw_scheme, url.raw_host, url.port or 443)


@pytest.mark.parametrize(
    "path", ["/batches/a b", "/batches/../files", "/batches/%2e", "batches/x", "/batches/é", "/"]
)
def test_a_template_takes_only_a_plain_path(path: str) -> None:
    template = RequestTemplate("GET", "http://h/v1", params=None, headers=HEADERS)
    assert template.fill(path) is None


def test_a_template_refuses_a_scheme_it_cannot_send() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        RequestTemplate("GET", "ftp://h/v1", params=None, headers=HEADERS)


def test_a_head_answer_reads_as_httpx_reads_the_headers() -> None:
    raw = [
        (b"x-request-id", b"req_1"),
        (b"retry-after", b"2"),
        (b"x-thing", b"a"),
        (b"x-thing", b"b"),
        (b"x-latin", "caf\xe9".encode("latin-1")),
        (b"x-utf8", "café".encode()),
    ]
    answer = HeadAnswer(Head(429, b"Too Many", b"HTTP/1.1", raw))
    response = httpx.Response(429, headers=raw)
    assert answer.status_code == 429
    for name in ("x-request-id", "retry-after", "x-thing", "x-latin", "x-utf8", "absent"):
        assert answer.headers.get(name) == response.headers.get(name), name


async def _pieces(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _read(
    *pieces: bytes,
    encoding: str | None = None,
    declared: int | None = None,
    cap: int = 100,
    truncate: bool = False,
) -> bytes:
    return asyncio.run(
        read_pieces_capped(_pieces(*pieces), encoding, declared, cap, truncate=truncate)
    )


def test_a_body_is_read_whole_within_its_cap() -> None:
    assert _read(b'{"a":', b" 1}", declared=8) == b'{"a": 1}'
    packed = gzip.compress(b"x" * 90)
    assert _read(packed[:5], packed[5:], encoding="gzip") == b"x" * 90


def test_past_the_cap_a_whole_answer_fails_and_an_excerpt_is_cut() -> None:
    with pytest.raises(BodyTooLarge):  # declared: refused before reading
        _read(b"", declared=101)
    with pytest.raises(BodyTooLarge):  # a gzip bomb: refused as it inflates
        _read(gzip.compress(b"x" * 10_000), encoding="gzip")
    assert _read(b"y" * 150, truncate=True) == b"y" * 100


def test_an_encoding_not_asked_for_is_refused() -> None:
    with pytest.raises(UnsupportedEncoding):
        _read(b"...", encoding="br")
