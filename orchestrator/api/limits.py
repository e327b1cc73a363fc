"""How long one HTTP call may take, and a way to end every call in flight at once.

A read timeout alone bounds nothing: a server that sends one byte every few
seconds never trips it (a 38-byte answer trickled at 1 byte/s took 38 s). So
every call runs under a limit the network layer reads before each socket
operation (transport.py):

- ``Deadline``: a JSON call's answer must be complete within so many seconds.
- ``MinThroughput``: a download (hundreds of MB, legitimately minutes) has no
  deadline; instead every ``window`` seconds must bring ``window * rate`` bytes.

``Interrupter.abort()`` (the stop path, on SIGTERM) shuts down the sockets of
every call in flight and refuses new ones, so a process stops in a moment
instead of waiting out a slow server.

Durations come from a monotonic clock that tests inject; they are local
measurements, never compared across hosts.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Protocol

__all__ = [
    "Aborted",
    "CallScope",
    "Deadline",
    "Interrupter",
    "LimitReached",
    "MinThroughput",
    "current_scope",
]

Monotonic = Callable[[], float]


class LimitReached(Exception):
    """The call ran past its limit; the message names the limit and its setting."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class Aborted(Exception):
    """The process is stopping: the call was ended before its answer was complete."""


class CallLimit(Protocol):
    def remaining(self) -> float:
        """Seconds left before the call must fail if nothing more arrives."""
        ...

    def received(self, n: int) -> None:
        """``n`` more bytes of the answer arrived."""
        ...

    def reached(self) -> LimitReached: ...


class Deadline:
    """The whole exchange, from connecting to the last byte, within ``seconds``."""

    def __init__(self, seconds: float, monotonic: Monotonic) -> None:
        self.seconds = seconds
        self._monotonic = monotonic
        self._end = monotonic() + seconds

    def remaining(self) -> float:
        return self._end - self._monotonic()

    def received(self, n: int) -> None:
        pass

    def reached(self) -> LimitReached:
        return LimitReached(
            f"no complete answer within the call's deadline of {self.seconds:g}s "
            "(setting api_deadline)",
            self.seconds,
        )


class MinThroughput:
    """At least ``bytes_per_second * window`` bytes in every ``window`` seconds.

    Each time that many bytes have arrived, the next ones have ``window`` seconds
    from then: a large file downloads at any reasonable speed, a trickle fails.
    """

    def __init__(self, bytes_per_second: int, window: float, monotonic: Monotonic) -> None:
        self.bytes_per_second = bytes_per_second
        self.window = window
        self._monotonic = monotonic
        self._quota = max(1, int(bytes_per_second * window))
        self._bytes = 0
        self._end = monotonic() + window

    def remaining(self) -> float:
        return self._end - self._monotonic()

    def received(self, n: int) -> None:
        self._bytes += n
        if self._bytes >= self._quota:
            self._bytes = 0
            self._end = self._monotonic() + self.window

    def reached(self) -> LimitReached:
        return LimitReached(
            f"slower than {self.bytes_per_second} bytes/s over {self.window:g}s "
            "(settings download_min_bytes_per_second, download_throughput_window)",
            self.window,
        )


class Interrupter:
    """Ends every call in flight at once; one per client, shared by its threads.

    ``abort`` may run in a signal handler on the main thread, so the lock is
    reentrant and the work under it is a few dictionary operations.
    """

    def __init__(self) -> None:
        self._aborted = threading.Event()
        self._lock = threading.RLock()
        self._in_use: dict[int, socket.socket] = {}

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def wait(self, seconds: float) -> None:
        """Sleep, but wake at once when aborted (the retry loop's sleep)."""
        self._aborted.wait(seconds)

    def abort(self) -> None:
        self._aborted.set()
        with self._lock:
            sockets = list(self._in_use.values())
        for sock in sockets:
            _shut_down(sock)

    @contextlib.contextmanager
    def using(self, sock: socket.socket | None) -> Iterator[None]:
        """Around one blocking socket operation: ``abort`` shuts the socket down."""
        if self.aborted:
            raise Aborted("the process is stopping")
        if sock is None:
            yield
            return
        key = id(sock)
        with self._lock:
            self._in_use[key] = sock
        try:
            if self.aborted:  # abort ran before we registered: do its work
                _shut_down(sock)
            yield
        finally:
            with self._lock:
                self._in_use.pop(key, None)


def _shut_down(sock: socket.socket) -> None:
    # socket.shutdown wakes a thread blocked in recv on this socket (close does not).
    # The base class's method, so an SSLSocket's TLS state is left to its own thread.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class CallScope:
    """The limit and the interrupter of the call running in this context."""

    def __init__(self, limit: CallLimit, interrupter: Interrupter, *, read_bytes: int = 0) -> None:
        self.limit = limit
        self.interrupter = interrupter
        # socket reads of at least this many bytes (a download's body: httpcore's 64 KiB
        # reads cost twice the CPU of 1 MiB ones, in h11's per-read work)
        self.read_bytes = read_bytes

    def timeout(self, timeout: float | None) -> float:
        """The socket timeout for the next operation: never past the limit."""
        if self.interrupter.aborted:
            raise Aborted("the process is stopping")
        remaining = self.limit.remaining()
        if remaining <= 0:
            raise self.limit.reached()
        return remaining if timeout is None else min(timeout, remaining)

    def check(self) -> None:
        """Between chunks: raise if the call is over its limit or aborted."""
        self.timeout(None)

    def received(self, n: int) -> None:
        self.limit.received(n)

    @contextlib.contextmanager
    def active(self) -> Iterator[CallScope]:
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)


_current: ContextVar[CallScope | None] = ContextVar("orchestrator_call_scope", default=None)


def current_scope() -> CallScope | None:
    return _current.get()
