"""A raw-socket HTTP server on 127.0.0.1 that answers however a test scripts it.

The simulator speaks correct HTTP; this one trickles headers a byte at a time,
stalls mid-body, lies about Content-Length or never ends a chunked body. Each
connection reads one request's headers, sets ``requested``, then runs
``answer(conn, stop)``. Every wait in an answer is ``stop.wait(...)``, so
``close()`` ends the server at once; nothing runs past the test.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

Answer = Callable[[socket.socket, threading.Event], None]

MAX_REQUEST_HEAD = 64 * 1024


class RawServer:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.stop = threading.Event()
        self.requested = threading.Event()
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_HEAD:
                    data = conn.recv(4096)
                    if not data:
                        return
                    head += data
                self.requests.append(head.split(b"\r\n", 1)[0])
                self.requested.set()
                self.answer(conn, self.stop)
            except OSError:
                return  # the client hung up: that is often the point

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._accepting.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def trickle(conn: socket.socket, stop: threading.Event, data: bytes, every: float) -> None:
    """Send ``data`` a byte at a time, ``every`` seconds apart, until done or stopped."""
    for i in range(len(data)):
        if stop.wait(every):
            return
        conn.sendall(data[i : i + 1])


def head(status: str = "200 OK", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
