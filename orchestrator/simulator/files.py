"""Result lines and file bodies of simulated batches.

Everything is derived from the batch id and the request index, so a file can be
generated again at any time and comes out byte-identical. Large files are never
held in memory: their size is measured once (one generation pass) and every
download generates the lines again while streaming.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import orjson

from .scenario import Phase, Timeline

CHUNK_BYTES = 1 << 16
CACHE_MAX_BYTES = 1 << 20  # files up to this size are kept as bytes once generated
MIN_CONTENT_CHARS = 24  # every reply says something, however small body_bytes is

FileKind = Literal["output", "error"]


class Outcome(StrEnum):
    """Where one request of a terminal batch ended up (the simulator's ground truth)."""

    OUTPUT = "output"
    HTTP_ERROR = "error:400"
    CANCELLED = "error:batch_cancelled"
    EXPIRED = "error:batch_expired"
    MISSING = "missing"


UNRUN_MESSAGES = {
    "batch_cancelled": "The batch was cancelled before this request executed.",
    "batch_expired": "This request could not be executed before the completion window expired.",
}

_FILLER = (
    "The quick brown fox jumps over the lazy dog while the simulated model keeps talking "
    "about batches, cancellations, partial results and other durable things. "
)


def request_digest(batch_id: str, index: int) -> bytes:
    return hashlib.blake2b(f"{batch_id}:{index}".encode(), digest_size=16).digest()


def request_fails(batch_id: str, index: int, ratio: float) -> bool:
    """Deterministic per (batch, request): does this request fail with an HTTP error?"""
    if ratio <= 0.0:
        return False
    if ratio >= 1.0:
        return True
    return int.from_bytes(request_digest(batch_id, index)[:8], "big") < ratio * 2.0**64


class FailureIndex:
    """Which requests of a batch fail, with prefix counts for request_counts."""

    __slots__ = ("_prefix", "batch_id", "ratio", "total")

    def __init__(self, batch_id: str, total: int, ratio: float) -> None:
        self.batch_id = batch_id
        self.total = total
        self.ratio = ratio
        self._prefix: array[int] | None = None
        if 0.0 < ratio < 1.0:
            prefix = array("I", [0])
            running = 0
            for index in range(total):
                running += request_fails(batch_id, index, ratio)
                prefix.append(running)
            self._prefix = prefix

    def failed(self, index: int) -> bool:
        if self._prefix is None:
            return self.ratio >= 1.0
        return self._prefix[index + 1] != self._prefix[index]

    def failures_before(self, done: int) -> int:
        """Failed requests among indices 0..done-1."""
        if self._prefix is None:
            return done if self.ratio >= 1.0 else 0
        return self._prefix[done]


@dataclass(frozen=True, slots=True)
class BatchSnapshot:
    """The immutable facts about a terminal batch that its files are generated from."""

    batch_id: str
    model: str
    endpoint: str
    timeline: Timeline
    phase: Phase
    failures: FailureIndex
    custom_id: Callable[[int], str]

    def outcome(self, index: int) -> Outcome:
        if index < self.phase.done:
            return Outcome.HTTP_ERROR if self.failures.failed(index) else Outcome.OUTPUT
        if self.phase.unrun_code == "batch_cancelled":
            return Outcome.CANCELLED
        if self.phase.unrun_code == "batch_expired":
            return Outcome.EXPIRED
        return Outcome.MISSING

    def line_counts(self) -> tuple[int, int]:
        """(output lines, error lines)."""
        failed = self.failures.failures_before(self.phase.done)
        unrun = self.timeline.total - self.phase.done if self.phase.unrun_code else 0
        return self.phase.done - failed, failed + unrun

    def indices(self, kind: FileKind) -> list[int]:
        done = self.phase.done
        if kind == "output":
            return [i for i in range(done) if not self.failures.failed(i)]
        if kind == "error":
            failed = [i for i in range(done) if self.failures.failed(i)]
            unrun = list(range(done, self.timeline.total)) if self.phase.unrun_code else []
            return failed + unrun
        raise ValueError(f"a batch has no generated {kind!r} file")


class LineRenderer:
    """Renders the JSONL line of one request of a batch."""

    def __init__(self, snapshot: BatchSnapshot, body_bytes: int) -> None:
        self.snap = snapshot
        end = snapshot.phase
        ends = (end.completed_at, end.expired_at, end.cancelled_at, end.failed_at)
        self._last_at = max((t for t in ends if t is not None), default=math.inf)
        base = len(orjson.dumps(self._completion(0, "", 0)))
        self._pad = max(MIN_CONTENT_CHARS, body_bytes - base)
        self._filler = _FILLER * (self._pad // len(_FILLER) + 2)

    def _ids(self, index: int) -> tuple[str, str]:
        hex_ = request_digest(self.snap.batch_id, index).hex()
        return "batch_req_" + hex_, "req_" + hex_[::-1]

    def _completion(self, index: int, content: str, created: int) -> dict[str, object]:
        prompt_tokens = 12 + index % 50
        completion_tokens = max(1, len(content) // 4)
        return {
            "id": "chatcmpl-" + f"{index:08d}{self.snap.batch_id[-16:]}",
            "object": "chat.completion",
            "created": created,
            "model": self.snap.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_simulator",
        }

    def line(self, index: int) -> bytes:
        outcome = self.snap.outcome(index)
        line_id, request_id = self._ids(index)
        custom_id = self.snap.custom_id(index)
        if outcome is Outcome.OUTPUT:
            created = int(min(self.snap.timeline.finished_at(index), self._last_at))
            offset = index % 61
            content = self._filler[offset : offset + self._pad]
            response: dict[str, object] | None = {
                "status_code": 200,
                "request_id": request_id,
                "body": self._completion(index, content, created),
            }
            error: dict[str, object] | None = None
        elif outcome is Outcome.HTTP_ERROR:
            response = {
                "status_code": 400,
                "request_id": request_id,
                "body": {
                    "error": {
                        "message": f"Invalid 'messages': simulated failure of request {index}.",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": None,
                    }
                },
            }
            error = None
        else:
            code = "batch_cancelled" if outcome is Outcome.CANCELLED else "batch_expired"
            response = None
            error = {"code": code, "message": UNRUN_MESSAGES[code]}
        record = {"id": line_id, "custom_id": custom_id, "response": response, "error": error}
        return orjson.dumps(record) + b"\n"


def input_lines(
    total: int, custom_id: Callable[[int], str], endpoint: str, model: str
) -> Callable[[], Iterator[bytes]]:
    """The input file of a batch created through the control API (it was never uploaded)."""

    def lines() -> Iterator[bytes]:
        for index in range(total):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"Request number {index}."}],
            }
            record = {
                "custom_id": custom_id(index),
                "method": "POST",
                "url": endpoint,
                "body": body,
            }
            yield orjson.dumps(record) + b"\n"

    return lines


class FileContent:
    """The bytes of one file: stored (uploads) or generated on demand (batch files)."""

    def __init__(
        self,
        data: bytes | None = None,
        *,
        lines: Callable[[], Iterator[bytes]] | None = None,
    ) -> None:
        if (data is None) == (lines is None):
            raise ValueError("give exactly one of data or lines")
        self._data = data
        self._lines = lines
        self._size: int | None = None if data is None else len(data)
        self._lock = threading.Lock()

    def size(self) -> int:
        """Content-Length; the first call on a large generated file costs one generation pass."""
        with self._lock:
            if self._size is None:
                self._measure()
            assert self._size is not None
            return self._size

    def _measure(self) -> None:
        assert self._lines is not None
        size = 0
        parts: list[bytes] | None = []
        for line in self._lines():
            size += len(line)
            if parts is not None:
                parts.append(line)
                if size > CACHE_MAX_BYTES:
                    parts = None
        self._size = size
        if parts is not None:
            self._data = b"".join(parts)

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The content in chunks of roughly ``chunk_bytes`` (call ``size()`` first)."""
        data = self._data
        if data is not None:
            for start in range(0, len(data), chunk_bytes):
                yield data[start : start + chunk_bytes]
            return
        assert self._lines is not None
        buffer: list[bytes] = []
        buffered = 0
        for line in self._lines():
            buffer.append(line)
            buffered += len(line)
            if buffered >= chunk_bytes:
                yield b"".join(buffer)
                buffer.clear()
                buffered = 0
        if buffer:
            yield b"".join(buffer)

    def read(self) -> bytes:
        return b"".join(self.chunks())


def batch_file_lines(
    snapshot: BatchSnapshot, kind: FileKind, file_id: str, *, shuffle: bool, body_bytes: int
) -> Callable[[], Iterator[bytes]]:
    """A re-callable generator of the lines of one of the batch's files."""
    order: list[Sequence[int]] = []  # computed on first use, then reused

    def lines() -> Iterator[bytes]:
        if not order:
            indices = snapshot.indices(kind)
            if shuffle:
                random.Random(file_id).shuffle(indices)
            order.append(array("I", indices))
        renderer = LineRenderer(snapshot, body_bytes)
        for index in order[0]:
            yield renderer.line(index)

    return lines
