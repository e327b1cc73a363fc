"""A hostile Batch API on loopback: a real HTTP server answering from a script.

Each (method, path) can be given a list of `Answer`s, served in order; the last
one repeats (or, with ``then_upstream=True``, later calls go to the upstream).
Anything unscripted is forwarded to ``upstream`` (a simulator, say), so a test
can make a few batches hostile while the rest behave. An answer is the status,
headers and body bytes, optionally gzip-encoded, trickled a few bytes at a time,
or cut off after some bytes (the connection then closes with the promised
``Content-Length`` unmet).

    with HostileServer(upstream=sim.url) as hostile:
        hostile.script("POST", f"/v1/batches/{b}/cancel", Answer(body=batch("batch_other")))
        client = make_client(hostile.url, ...)

Bounded: the server threads are daemons and stop when the block ends; a trickle
waits on the stop event, so it never holds the shutdown up.
"""

from __future__ import annotations

import gzip
import json
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

__all__ = ["Answer", "HostileServer", "batch_object", "error_answer", "gzip_bomb"]

_FORWARDED = ("content-type", "x-request-id", "retry-after", "retry-after-ms", "x-should-retry")


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes | Mapping[str, Any] | list[Any] | str = b""  # a mapping or list is sent as JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    gzip: bool = False  # send the body gzip-encoded (Content-Encoding: gzip)
    trickle_bytes: int = 0  # send this many bytes at a time ...
    trickle_s: float = 0.0  # ... with this pause between them
    cut_after: int | None = None  # send only this many body bytes, then close

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            data = self.body
        elif isinstance(self.body, str):
            data = self.body.encode()
        else:
            data = json.dumps(self.body).encode()
        return gzip.compress(data) if self.gzip else data


def batch_object(batch_id: str, status: str = "in_progress", **fields: Any) -> dict[str, Any]:
    """A plausible Batch object; `fields` override or add to it."""
    body: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "created_at": 1_767_225_600,
        "request_counts": {"total": 3, "completed": 1, "failed": 0},
    }
    body.update(fields)
    return body


def error_answer(status: int, message: str, **headers: str) -> Answer:
    envelope = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return Answer(status, envelope, headers)


def gzip_bomb(head: bytes, mebibytes: int, tail: bytes = b"", fill: bytes = b" ") -> bytes:
    """``head``, ``mebibytes`` MiB of ``fill``, ``tail``, gzipped: about 1 KB a MiB.

    Built in a moment: each MiB is compressed once after a full flush (which makes
    every MiB's compressed block the same), and the block is repeated.
    """
    mib = fill * (1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    last = deflate.compress(tail) + deflate.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    for _ in range(mebibytes):
        crc = zlib.crc32(mib, crc)
    crc = zlib.crc32(tail, crc)
    size = (len(head) + mebibytes * len(mib) + len(tail)) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    body = first + block * mebibytes + last
    return header + body + struct.pack("<II", crc, size)


class HostileServer:
    def __init__(self, upstream: str | None = None) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1") if upstream else None
        self.calls: Counter[tuple[str, str]] = Counter()
        self._script: dict[tuple[str, str], tuple[list[Answer], bool]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._forward = httpx.Client(timeout=30.0)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, method: str, path: str, *answers: Answer, then_upstream: bool = False) -> None:
        """Answer `method path` (e.g. ``"GET", "/v1/batches/batch_x"``) with these, in order."""
        with self._lock:
            self._script[(method.upper(), path)] = (list(answers), then_upstream)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
        self._forward.close()

    # --- serving ---------------------------------------------------------------

    def _next(self, method: str, path: str) -> Answer | None:
        with self._lock:
            self.calls[(method, path)] += 1
            scripted = self._script.get((method, path))
            if scripted is None:
                return None
            answers, then_upstream = scripted
            if len(answers) > 1 or (answers and then_upstream):
                return answers.pop(0)
            return answers[0] if answers else None

    def _forwarded(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        if self.upstream is None:
            return error_answer(404, f"no script for {method} {target}")
        sent = {k: v for k, v in headers.items() if k.lower() in ("authorization", "content-type")}
        reply = self._forward.request(method, self.upstream + target, headers=sent, content=body)
        kept = {k: v for k, v in reply.headers.items() if k.lower() in _FORWARDED}
        return Answer(reply.status_code, reply.content, kept)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                answer = server._next(self.command, path)
                if answer is None:
                    answer = server._forwarded(
                        self.command, self.path, dict(self.headers.items()), body
                    )
                server._send(self, answer)

            do_GET = do_POST = do_DELETE = _serve

        return Handler

    def _send(self, handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        data = answer.payload()
        handler.send_response(answer.status)
        headers = {"content-type": "application/json", **answer.headers}
        for name, value in headers.items():
            handler.send_header(name, value)
        if answer.gzip:
            handler.send_header("content-encoding", "gzip")
        handler.send_header("content-length", str(len(data)))
        if answer.cut_after is not None or answer.trickle_bytes:
            handler.send_header("connection", "close")
            handler.close_connection = True
        handler.end_headers()
        sent = data if answer.cut_after is None else data[: answer.cut_after]
        try:
            for piece in self._pieces(sent, answer):
                handler.wfile.write(piece)
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _pieces(self, data: bytes, answer: Answer) -> Iterator[bytes]:
        if not answer.trickle_bytes:
            yield data
            return
        for start in range(0, len(data), answer.trickle_bytes):
            if start and self._stop.wait(answer.trickle_s):
                return
            yield data[start : start + answer.trickle_bytes]
