"""A file's byte stream split into lines, counted and hashed: pure (no I/O, stdlib
only, so the worker's configuration names its sizes without loading the reading of
result lines, ``core/result_lines.py``).

A line longer than ``max_line`` bytes (a line that never ends is a way to make us
hold gigabytes) is not held: its first ``OVERLONG_PREFIX`` bytes and its size
become a line error naming the cap, and the lines after it are read as usual.
The default cap is far above any real line: the reference (section 4.6) puts a
whole file of 50,000 embeddings at 200-300 MB, 4-6 KB a line, and a line holds
one response body (a chat completion, an embedding list, a few images).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "MAX_LINE_BYTES",
    "OVERLONG_PREFIX",
    "READ_BYTES",
    "Hasher",
    "Line",
    "LineSplitter",
    "OverlongLine",
]

MAX_LINE_BYTES = 16 << 20  # setting ingest_max_line_bytes
# At most, per piece of a file's body read from the socket: large enough that per-piece
# work is noise. Here, not in processes/ingest.py, so that the worker's configuration
# (processes/config.py) names it without importing ingestion and its database driver.
READ_BYTES = 1 << 20
OVERLONG_PREFIX = 4096  # bytes of an over-long line kept in its line error (at most the cap)


@dataclass(frozen=True, slots=True)
class OverlongLine:
    """A line longer than the cap: its first bytes and its size, not the line."""

    prefix: bytes
    size: int
    cap: int

    def error(self) -> str:
        return (
            f"line is {self.size} bytes, longer than the cap of {self.cap} bytes "
            f"(setting ingest_max_line_bytes); only its first {len(self.prefix)} bytes are kept"
        )


Line = bytes | OverlongLine


class Hasher(Protocol):
    """What ``LineSplitter`` hashes the stream with (``hashlib.sha256()`` or a stand-in
    that computes it elsewhere, given the same bytes in the same order)."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class LineSplitter:
    """Feed it chunks, get back complete lines (newline removed).

    Counts and hashes every byte of the stream, so a re-download from byte 0
    yields the file's full size and SHA-256 even when its first lines are skipped.
    Holds at most ``max_line`` bytes of an unfinished line.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES, *, sha256: Hasher | None = None) -> None:
        self.max_line = max_line
        self._prefix = min(OVERLONG_PREFIX, max_line)  # the same whatever the chunking
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._overlong: OverlongLine | None = None  # the line being skipped, size so far
        self._sha: Hasher = sha256 or hashlib.sha256()
        self.bytes = 0
        self.complete_lines = 0

    def feed(self, chunk: bytes) -> list[Line]:
        self._sha.update(chunk)
        self.bytes += len(chunk)
        if self._overlong is not None:
            end = chunk.find(b"\n")
            skipped = self._overlong
            if end < 0:
                self._overlong = OverlongLine(
                    skipped.prefix, skipped.size + len(chunk), skipped.cap
                )
                return []
            self._overlong = None
            first: Line = OverlongLine(skipped.prefix, skipped.size + end, skipped.cap)
        elif self._pending:
            end = chunk.find(b"\n")
            if end < 0:  # a long line still arriving: join once, when it ends
                self._pending.append(chunk)
                self._pending_bytes += len(chunk)
                if self._pending_bytes > self.max_line:
                    self._skip_pending()
                return []
            # the line that began in an earlier chunk ends here: join only it (joining
            # the whole chunk to it copied every byte of the file once more)
            self._pending.append(chunk[:end])
            self._pending_bytes += end
            if self._pending_bytes > self.max_line:
                first = self._pending_as_overlong()
            else:
                first = b"".join(self._pending)
        else:
            return self._split(chunk, 0)
        lines = self._split(chunk, end + 1)
        lines.insert(0, first)
        self.complete_lines += 1
        return lines

    def _split(self, chunk: bytes, start: int) -> list[Line]:
        """The lines of ``chunk`` from ``start`` on; what follows its last newline is
        kept, pending."""
        # find() is memchr; bytes.split tests byte by byte, twice the CPU per MiB
        lines: list[Line] = []
        append = lines.append
        find = chunk.find
        cap = self.max_line
        while (end := find(b"\n", start)) >= 0:
            if end - start > cap:
                append(OverlongLine(chunk[start : start + self._prefix], end - start, cap))
            else:
                append(chunk[start:end])
            start = end + 1
        last = chunk[start:]
        self._pending = [last] if last else []
        self._pending_bytes = len(last)
        if len(last) > cap:
            self._skip_pending()
        self.complete_lines += len(lines)
        return lines

    def _skip_pending(self) -> None:
        self._overlong = self._pending_as_overlong()

    def _pending_as_overlong(self) -> OverlongLine:
        prefix = bytearray()
        for piece in self._pending:  # not a join: that would copy the whole line once more
            prefix += piece[: self._prefix - len(prefix)]
        overlong = OverlongLine(bytes(prefix), self._pending_bytes, self.max_line)
        self._pending = []
        self._pending_bytes = 0
        return overlong

    def tail(self) -> Line:
        """What followed the last newline (b"" when the stream ended with one)."""
        if self._overlong is not None:
            return self._overlong
        return b"".join(self._pending)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()
