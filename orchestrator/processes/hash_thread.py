"""SHA-256 of a download, computed in a thread of its own.

Hashing every byte of a result file costs 0.09 s of CPU per 100 MB, on the
thread that also splits, parses and stores the lines. hashlib lets go of the
GIL while it hashes a large buffer, so in a thread of its own the digest is made
beside that work (on another core when there is one) instead of before it. The
pieces are immutable ``bytes``, hashed in the order they were given; at most
``MAX_QUEUED`` wait (the download's pieces are at most 1 MiB: a few MiB held).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from types import TracebackType

__all__ = ["MAX_QUEUED", "HashThread"]

MAX_QUEUED = 8


class HashThread:
    """A ``Hasher`` (``core.line_splitter``) whose ``update`` returns at once; use it as a
    context manager, so the thread ends whatever happens to the download."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        # SimpleQueues (in C), not a bounded queue.Queue, whose Condition showed in the
        # splitting thread's profile (notify: 0.02 s per 100 MB). Each piece takes a
        # credit, given back once hashed: at most MAX_QUEUED wait.
        self._pieces: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._credits: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(MAX_QUEUED):
            self._credits.put(None)
        self._thread = threading.Thread(target=self._run, name="ingest-sha256", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while (data := self._pieces.get()) is not None:
            self._sha.update(data)
            self._credits.put(None)

    def update(self, data: bytes, /) -> None:
        if self._closed:
            raise ValueError("the hash is closed")
        self._credits.get()
        self._pieces.put(data)

    def hexdigest(self) -> str:
        """The digest of every piece given so far; no piece may follow."""
        self.close()
        return self._sha.hexdigest()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pieces.put(None)
            self._thread.join()

    def __enter__(self) -> HashThread:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
