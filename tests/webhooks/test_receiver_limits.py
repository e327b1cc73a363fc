"""The receiver against clients that misbehave at the HTTP level: odd lengths, slow or
idle connections, every slot taken. HTTP mechanics only, so SQLite is enough."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from orchestrator.clock import SystemClock
from orchestrator.db.database import Database
from orchestrator.processes.webhooks import ReceiverConfig, WebhookReceiver
from orchestrator.secret import Secret

from .signing import SECRET, event_body, signed_headers

Start = Callable[..., WebhookReceiver]


@pytest.fixture
def start(sqlite_url: str) -> Iterator[Start]:
    db = Database.connect(sqlite_url)
    running: list[WebhookReceiver] = []

    def make(**config: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(
            db, ReceiverConfig(secret=Secret(SECRET), **config), SystemClock()
        ).start()
        running.append(receiver)
        return receiver

    yield make
    for receiver in running:
        receiver.stop()
    db.dispose()


def _connect(receiver: WebhookReceiver) -> socket.socket:
    return socket.create_connection((receiver.host, receiver.port), timeout=5)


def _read_until_closed(sock: socket.socket, *, within: float) -> tuple[bytes, bool]:
    """Everything the server sends, and whether it closed the connection in time."""
    deadline = time.monotonic() + within
    chunks: list[bytes] = []
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return b"".join(chunks), True
        if not data:
            return b"".join(chunks), True
        chunks.append(data)
    return b"".join(chunks), False


def _answer_json(answer: bytes) -> Any:
    return orjson.loads(answer.partition(b"\r\n\r\n")[2])


def _delivery(*extra_headers: bytes) -> bytes:
    """A correctly signed delivery, with ``extra_headers`` after its Content-Length."""
    body = event_body("batch_a")
    head = b"POST /webhooks/openai HTTP/1.1\r\nHost: x\r\n"
    for name, value in signed_headers(body).items():
        head += f"{name}: {value}\r\n".encode()
    head += f"Content-Length: {len(body)}\r\n".encode()
    return head + b"".join(h + b"\r\n" for h in extra_headers) + b"\r\n" + body


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(b"\xb2", id="superscript two"),  # latin-1 '²': isdigit() yes, int() no
        pytest.param(b"9" * 5000, id="5000 digits"),  # over int()'s digit limit
    ],
)
def test_an_odd_content_length_is_a_400_not_a_traceback(
    start: Start, length: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = start()
    caplog.set_level(logging.WARNING)
    with _connect(receiver) as sock:
        sock.sendall(b"POST /webhooks/openai HTTP/1.1\r\nHost: x\r\nContent-Length: ")
        sock.sendall(length + b"\r\n\r\n")
        answer, closed = _read_until_closed(sock, within=3)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    assert "Content-Length is not a number" in _answer_json(answer)["error"]
    assert closed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert receiver.metrics_report().get("rejected") == 1


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        pytest.param(b"Content-Length: 5", "Content-Length headers that differ", id="two lengths"),
        pytest.param(b"Transfer-Encoding: chunked", "Transfer-Encoding", id="transfer-encoding"),
    ],
)
def test_a_body_whose_end_is_in_doubt_is_refused(start: Start, extra: bytes, why: str) -> None:
    # Correctly signed, so only the framing can be the reason for the 400.
    receiver = start()
    with _connect(receiver) as sock:
        sock.sendall(_delivery(extra))
        answer, closed = _read_until_closed(sock, within=3)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    assert why in _answer_json(answer)["error"]
    assert closed
    assert receiver.metrics_report() == {"rejected": 1}


_HEAD = b"POST /webhooks/openai HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("start_of_request", "trickle", "status", "outcomes"),
    [
        pytest.param(_HEAD, b"X-Slow: 1\r\n", b"", {}, id="headers"),
        pytest.param(
            _HEAD + b"Content-Length: 100000\r\n\r\n",
            b"x",
            b"HTTP/1.1 400",
            {"rejected": 1},
            id="body",
        ),
    ],
)
def test_a_request_that_trickles_in_is_cut_off_at_its_deadline(
    start: Start, start_of_request: bytes, trickle: bytes, status: bytes, outcomes: dict[str, int]
) -> None:
    # Each piece comes well within any per-recv() timeout; only a deadline for the whole
    # request ends it: in the headers silently, in the body with a 400. Then the one
    # slot is free for a real delivery.
    receiver = start(max_connections=1, request_seconds=0.5)
    started = time.monotonic()
    answer, closed = b"", False
    with _connect(receiver) as sock:
        sock.sendall(start_of_request)
        while not closed:
            assert time.monotonic() - started < 5, "still open after 5 s"
            try:
                sock.sendall(trickle)
            except (BrokenPipeError, ConnectionResetError):
                break
            more, closed = _read_until_closed(sock, within=0.1)  # paces the trickle
            answer += more
    assert answer.startswith(status), answer[:80]
    assert receiver.metrics_report() == outcomes
    body = event_body("batch_a")
    delivered = httpx.post(receiver.url, content=body, headers=signed_headers(body), timeout=5)
    assert delivered.status_code == 200


def test_an_idle_kept_alive_connection_is_closed(start: Start) -> None:
    receiver = start(idle_seconds=0.3)
    with _connect(receiver) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer, closed = _read_until_closed(sock, within=3)
    assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" not in answer
    assert closed, "a kept-alive connection was left open, holding its slot"


def test_with_every_slot_taken_a_delivery_gets_503_and_stop_still_returns(
    start: Start,
) -> None:
    receiver = start(max_connections=1, request_seconds=60, idle_seconds=60)
    with _connect(receiver) as held:  # accepted first: it takes the only slot
        held.sendall(b"POST /webhooks/openai HTTP/1.1\r\n")
        body = event_body("batch_a")
        try:
            busy = httpx.post(receiver.url, content=body, headers=signed_headers(body), timeout=5)
        except httpx.TimeoutException:
            pytest.fail("a delivery waited without end for a slot")
        assert (busy.status_code, busy.json()) == (503, {"error": "all 1 connections busy"})
        assert busy.headers["connection"] == "close"
        assert receiver.metrics_report() == {"busy": 1}

        # stop() waits for the accept loop, which may be waiting for a slot for this one.
        with _connect(receiver):
            stopper = threading.Thread(target=receiver.stop, daemon=True)
            stopper.start()
            stopper.join(timeout=5)
            stopped = not stopper.is_alive()
    stopper.join(timeout=5)  # had it hung, closing `held` lets it finish
    assert stopped, "stop() hung while a client held the only slot"
