"""Lines of an output or error file: split a byte stream into lines, turn each into a row.

Pure (no I/O); the ingest process feeds it the downloaded chunks.

A line is numbered by its physical position (1-based, blank lines included) so
the numbers, and the checkpoint counting them, are the same on every download.
Fields are read leniently (reference doc section 4.1): a line needs only to be a
JSON object with a string ``custom_id``; the rest is kept if it has the expected
type and dropped otherwise. A line that cannot be a row is kept verbatim as a
line error: nothing the server sent is lost.

A line longer than ``max_line`` bytes (a line that never ends is a way to make us
hold gigabytes) is not held: its first ``OVERLONG_PREFIX`` bytes and its size
become a line error naming the cap, and the lines after it are read as usual.
The default cap is far above any real line: the reference (section 4.6) puts a
whole file of 50,000 embeddings at 200-300 MB, 4-6 KB a line, and a line holds
one response body (a chat completion, an embedding list, a few images).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "MAX_LINE_BYTES",
    "RESULT_COLUMNS",
    "Line",
    "LineError",
    "LineSplitter",
    "OverlongLine",
    "ParsedChunk",
    "iter_rows",
    "parse_lines",
    "printable",
]

# The order of the values in each row tuple (the columns of batch_results). Tuples,
# not dicts: they go straight to the driver's executemany, the ingest's hot path.
RESULT_COLUMNS = (
    "batch_id",
    "custom_id",
    "line_id",
    "file_id",
    "file_kind",
    "line_number",
    "status_code",
    "request_id",
    "body",  # JSON text
    "error_code",
    "error_message",
)
Row = tuple[
    str, str, str | None, str, str, int, int | None, str | None, str | None, str | None, str | None
]

# Column widths of batch_results (models.py): a longer value would make the
# database refuse the whole chunk, so such a line becomes a line error instead.
MAX_CUSTOM_ID = 512
MAX_ID = 128
# PostgreSQL cannot hold U+0000 in text or jsonb; such a line is kept as raw text.
_NUL_ESCAPE = b"\\u0000"
_dumps = orjson.dumps
MAX_LINE_BYTES = 16 << 20  # setting ingest_max_line_bytes
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


class LineSplitter:
    """Feed it chunks, get back complete lines (newline removed).

    Counts and hashes every byte of the stream, so a re-download from byte 0
    yields the file's full size and SHA-256 even when its first lines are skipped.
    Holds at most ``max_line`` bytes of an unfinished line.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._prefix = min(OVERLONG_PREFIX, max_line)  # the same whatever the chunking
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._overlong: OverlongLine | None = None  # the line being skipped, size so far
        self._sha = hashlib.sha256()
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
            self.complete_lines += 1
            first: list[Line] = [OverlongLine(skipped.prefix, skipped.size + end, skipped.cap)]
            return first + self._split(chunk[end + 1 :])
        if self._pending:
            self._pending.append(chunk)
            if b"\n" not in chunk:  # a long line still arriving: join once, when it ends
                self._pending_bytes += len(chunk)
                if self._pending_bytes > self.max_line:
                    self._skip_pending()
                return []
            chunk = b"".join(self._pending)
            self._pending = []
        return self._split(chunk)

    def _split(self, chunk: bytes) -> list[Line]:
        lines = chunk.split(b"\n")
        last = lines.pop()
        self._pending = [last] if last else []
        self._pending_bytes = len(last)
        if len(last) > self.max_line:
            self._skip_pending()
        self.complete_lines += len(lines)
        if lines and max(map(len, lines)) > self.max_line:
            return [self._cut(line) if len(line) > self.max_line else line for line in lines]
        return lines  # type: ignore[return-value]  # list is invariant; bytes are Lines

    def _cut(self, line: bytes) -> OverlongLine:
        return OverlongLine(line[: self._prefix], len(line), self.max_line)

    def _skip_pending(self) -> None:
        prefix = bytearray()
        for piece in self._pending:  # not a join: that would copy the whole line once more
            prefix += piece[: self._prefix - len(prefix)]
        self._overlong = OverlongLine(bytes(prefix), self._pending_bytes, self.max_line)
        self._pending = []
        self._pending_bytes = 0

    def tail(self) -> Line:
        """What followed the last newline (b"" when the stream ended with one)."""
        if self._overlong is not None:
            return self._overlong
        return b"".join(self._pending)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


@dataclass(frozen=True, slots=True)
class LineError:
    line_number: int
    raw: bytes
    error: str


@dataclass(slots=True)
class ParsedChunk:
    rows: list[Row]  # values in RESULT_COLUMNS order
    errors: list[LineError]


def printable(raw: bytes) -> str:
    """Raw bytes as text a database keeps: bad UTF-8 and NUL escaped, nothing dropped."""
    return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def _short_text(value: object, limit: int) -> str | None:
    """The string, None when absent or not a string; ValueError when too long for its column."""
    if type(value) is not str:
        return None
    if len(value) > limit:
        raise ValueError(f"longer than {limit} characters")
    return value


def _json_text(value: object, field: str) -> str:
    """``value`` as JSON text (a string as itself); ValueError when it cannot be written.

    orjson reads 1,024 levels of nesting but writes only 254, and Python's ``str``
    of a deep list runs out of stack: a line nested deeper is a line error, not a
    crash that fails its whole chunk at every download.
    """
    if type(value) is str:
        return value
    try:
        return _dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"{field} cannot be stored: {exc}") from None


def _row(obj: dict[str, Any], number: int, batch_id: str, file_id: str, kind: str) -> Row:
    """The row of one parsed line (ValueError: it cannot be one)."""
    custom_id = obj.get("custom_id")
    if type(custom_id) is not str or not custom_id:
        raise ValueError("no custom_id (a non-empty string) in the line")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise ValueError(f"custom_id longer than {MAX_CUSTOM_ID} characters")
    try:
        line_id = _short_text(obj.get("id"), MAX_ID)
    except ValueError as exc:
        raise ValueError(f"id {exc}") from None
    status_code = request_id = body = error_code = error_message = None
    response = obj.get("response")
    if type(response) is dict:
        code = response.get("status_code")
        # an HTTP status or nothing: 2**64 here would fail the whole chunk's INSERT
        status_code = code if type(code) is int and 100 <= code <= 599 else None
        try:
            request_id = _short_text(response.get("request_id"), MAX_ID)
        except ValueError as exc:
            raise ValueError(f"response.request_id {exc}") from None
        content = response.get("body")
        if content is not None:
            try:
                body = _dumps(content).decode()
            except orjson.JSONEncodeError as exc:
                raise ValueError(f"response.body cannot be stored: {exc}") from None
    error = obj.get("error")
    if type(error) is dict:
        code = error.get("code")
        if code is not None:
            error_code = _json_text(code, "error.code")
            if len(error_code) > MAX_ID:
                raise ValueError(f"error.code longer than {MAX_ID} characters")
        message = error.get("message")
        error_message = None if message is None else _json_text(message, "error.message")
    return (
        batch_id,
        custom_id,
        line_id,
        file_id,
        kind,
        number,
        status_code,
        request_id,
        body,
        error_code,
        error_message,
    )


def iter_rows(
    lines: Sequence[Line],
    first_number: int,
    *,
    batch_id: str,
    file_id: str,
    kind: str,
    errors: list[LineError],
    nul_unsafe: bool = False,
) -> Iterator[Row]:
    """Rows of consecutive lines numbered from ``first_number``; line errors go to ``errors``.

    Lazy, so a database can store rows while later lines are still being parsed.
    Blank lines are skipped. ``nul_unsafe``: the database cannot store U+0000
    (PostgreSQL), so a line containing ``\\u0000`` is kept as a line error rather
    than refused with the whole chunk.
    """
    loads = orjson.loads
    for offset, raw in enumerate(lines):
        if isinstance(raw, OverlongLine):
            errors.append(LineError(first_number + offset, raw.prefix, raw.error()))
            continue
        if not raw or raw.isspace():
            continue
        number = first_number + offset
        try:
            obj = loads(raw)
        except orjson.JSONDecodeError as exc:
            errors.append(LineError(number, raw, f"not valid JSON: {exc}"))
            continue
        if type(obj) is not dict:
            errors.append(LineError(number, raw, f"not a JSON object but {type(obj).__name__}"))
            continue
        if nul_unsafe and _NUL_ESCAPE in raw:
            errors.append(
                LineError(number, raw, "contains \\u0000, which PostgreSQL cannot store; kept raw")
            )
            continue
        try:
            row = _row(obj, number, batch_id, file_id, kind)
        except ValueError as exc:
            errors.append(LineError(number, raw, str(exc)))
            continue
        yield row


def parse_lines(
    lines: Sequence[Line],
    first_number: int,
    *,
    batch_id: str,
    file_id: str,
    kind: str,
    nul_unsafe: bool = False,
) -> ParsedChunk:
    """``iter_rows``, all at once."""
    errors: list[LineError] = []
    rows = list(
        iter_rows(
            lines,
            first_number,
            batch_id=batch_id,
            file_id=file_id,
            kind=kind,
            errors=errors,
            nul_unsafe=nul_unsafe,
        )
    )
    return ParsedChunk(rows, errors)
