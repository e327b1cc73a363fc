"""Lines of an output or error file (``core/line_splitter.py`` splits them), each turned
into a row.

Pure (no I/O); the ingest process feeds it the downloaded lines.

A line is numbered by its physical position (1-based, blank lines included) so
the numbers, and the checkpoint counting them, are the same on every download.
Fields are read leniently (reference doc section 4.1): a line needs only to be a
JSON object with a string ``custom_id``; the rest is kept if it has the expected
type and dropped otherwise. A line that cannot be a row is kept verbatim as a
line error: nothing the server sent is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from orchestrator.core.line_splitter import Line, OverlongLine

__all__ = [
    "RESULT_COLUMNS",
    "LineError",
    "ParsedChunk",
    "is_whole_json",
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
    "body",  # JSON text: str, or UTF-8 bytes when asked (``iter_rows(json_bytes=True)``)
    "error_code",
    "error_message",
)
Row = tuple[
    str,
    str,
    str | None,
    str,
    str,
    int,
    int | None,
    str | None,
    str | bytes | None,  # or a msgspec.Raw (bytes to its stubs): a view of the line
    str | None,
    str | None,
]

# Column widths of batch_results (models.py): a longer value would make the
# database refuse the whole chunk, so such a line becomes a line error instead.
MAX_CUSTOM_ID = 512
MAX_ID = 128
# PostgreSQL cannot hold U+0000 in text; a line with it in a text column is kept raw.
_NUL_ERROR = "has U+0000 in a text field, which PostgreSQL cannot store; kept raw"
_dumps = orjson.dumps


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


def _error_fields(error: dict[str, Any]) -> tuple[str | None, str | None]:
    """(error_code, error_message) of a line's ``error`` object."""
    error_code = error_message = None
    code = error.get("code")
    if code is not None:
        error_code = _json_text(code, "error.code")
        if len(error_code) > MAX_ID:
            raise ValueError(f"error.code longer than {MAX_ID} characters")
    message = error.get("message")
    if message is not None:
        error_message = _json_text(message, "error.message")
    return error_code, error_message


def _response_fields(
    response: dict[str, Any], json_bytes: bool
) -> tuple[int | None, str | None, str | bytes | None]:
    """(status_code, request_id, body as JSON text) of a line's ``response`` object;
    the body as UTF-8 bytes with ``json_bytes``."""
    status_code, request_id = _status_and_request(
        response.get("status_code"), response.get("request_id")
    )
    body = response.get("body")
    if body is not None:
        try:
            body = _dumps(body)
        except orjson.JSONEncodeError as exc:
            raise ValueError(f"response.body cannot be stored: {exc}") from None
        if not json_bytes:
            body = body.decode()
    return status_code, request_id, body


def _status_and_request(status_code: object, request_id: object) -> tuple[int | None, str | None]:
    """The response's status_code (an HTTP status or nothing: 2**64 here would fail the
    whole chunk's INSERT) and request_id (a string or nothing)."""
    if type(status_code) is not int or not 100 <= status_code <= 599:
        status_code = None
    if type(request_id) is not str:
        request_id = None
    elif len(request_id) > MAX_ID:
        raise ValueError(f"response.request_id longer than {MAX_ID} characters")
    return status_code, request_id


def _ids(custom_id: object, line_id: object) -> tuple[str, str | None]:
    """The line's custom_id (required: a non-empty string) and its own id (if a string)."""
    if type(custom_id) is not str or not custom_id:
        raise ValueError("no custom_id (a non-empty string) in the line")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise ValueError(f"custom_id longer than {MAX_CUSTOM_ID} characters")
    if type(line_id) is not str:
        line_id = None
    elif len(line_id) > MAX_ID:
        raise ValueError(f"id longer than {MAX_ID} characters")
    return custom_id, line_id


def _row(
    obj: dict[str, Any], number: int, batch_id: str, file_id: str, kind: str, json_bytes: bool
) -> Row:
    """The row of one parsed line (ValueError: it cannot be one)."""
    custom_id, line_id = _ids(obj.get("custom_id"), obj.get("id"))
    response = obj.get("response")
    status_code, request_id, body = (
        _response_fields(response, json_bytes) if type(response) is dict else (None, None, None)
    )
    error = obj.get("error")
    error_code, error_message = _error_fields(error) if type(error) is dict else (None, None)
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


class _Response(msgspec.Struct):
    """A line's ``response`` as ``_answer_row`` reads it: the body left as its JSON text."""

    status_code: Any = None
    request_id: Any = None
    body: msgspec.Raw = msgspec.Raw()  # empty: no body


class _Answer(msgspec.Struct):
    """A line with a response object (an answer, its body unread); any other shape fails
    to decode (msgspec.ValidationError) and is read in full by ``_row``."""

    custom_id: Any = None
    id: Any = None
    response: _Response | None = None
    error: Any = None


_read_answer = msgspec.json.Decoder(_Answer).decode
_NULL = msgspec.Raw(b"null")
_NOT_AN_ANSWER = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def _answer_row(
    raw: bytes, number: int, batch_id: str, file_id: str, kind: str, json_bytes: bool
) -> Row | None:
    """The row of a line that answers its request (a response, no error), its body kept
    as the JSON text it is, never parsed into objects: an answer's body is most of the
    line, and parsing it only to write it out again was a third of the ingest's CPU.
    None: any other line (or one this reading refuses), for ``_row`` to read in full.
    ValueError: it cannot be a row (the same checks as ``_row``).

    msgspec checks the body's syntax as it skips it (as strictly as PostgreSQL's
    ``json``, tests/unit/test_result_lines.py), not its UTF-8: a line that is not
    ASCII is decoded first. A body is stored as sent, so it may hold what orjson does
    not read (a number beyond a double: 1e400) or write (nesting past 254 levels):
    every reader and writer of a stored body goes through ``core/json_text.py``.
    """
    try:
        answer = _read_answer(raw)
    except _NOT_AN_ANSWER:
        return None
    response = answer.response
    if response is None or answer.error is not None:
        return None
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError:
            return None
    custom_id, line_id = _ids(answer.custom_id, answer.id)
    status_code, request_id = _status_and_request(response.status_code, response.request_id)
    body = response.body
    text: str | bytes | None = body  # a msgspec.Raw: a view of the line's bytes
    if not body or body == _NULL:
        text = None
    elif not json_bytes:
        text = str(body, "utf-8")
    return (
        batch_id,
        custom_id,
        line_id,
        file_id,
        kind,
        number,
        status_code,
        request_id,
        text,
        None,
        None,
    )


def _has_nul(row: Row) -> bool:
    """U+0000 in a text column of the row (the body is JSON text: escaped there). Once
    per row on PostgreSQL: the short fields alone, plain tests (looking for the escape
    ``\\u0000`` in the whole line first scanned every byte: 0.065 s per 100 MB)."""
    nul = "\x00"
    line_id, request_id, error_code, error_message = row[2], row[7], row[9], row[10]
    return (
        nul in row[1]
        or (line_id is not None and nul in line_id)
        or (request_id is not None and nul in request_id)
        or (error_code is not None and nul in error_code)
        or (error_message is not None and nul in error_message)
    )


def iter_rows(
    lines: Iterable[Line],
    first_number: int,
    *,
    batch_id: str,
    file_id: str,
    kind: str,
    errors: list[LineError],
    nul_unsafe: bool = False,
    json_bytes: bool = False,
) -> Iterator[Row]:
    """Rows of consecutive lines numbered from ``first_number``; line errors go to ``errors``.

    Lazy, so a database can store rows while later lines are still being parsed.
    Blank lines are skipped. ``nul_unsafe``: the database cannot store U+0000 in
    text (PostgreSQL), so a line with U+0000 in a text column (its ids, its error)
    is kept as a line error rather than refused with the whole chunk. The body is
    JSON text, where U+0000 is the escape ``\\u0000`` that PostgreSQL's ``json``
    keeps as sent: it needs no check (scanning every line for it cost 5% of the
    ingest's CPU). ``json_bytes``: the body as UTF-8 bytes (``bytes`` or
    ``msgspec.Raw``), for a driver that sends it as text (PostgreSQL's COPY):
    decoding it to ``str`` only to have the driver encode it again cost 0.1 s of CPU
    per 100 MB. An answer's body is stored as the server sent it (``_answer_row``);
    any other line's as orjson writes it.
    """
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    row_of, answer_row_of = _row, _answer_row
    number = first_number - 1
    for raw in lines:
        number += 1
        if type(raw) is not bytes:  # an OverlongLine: its prefix and size
            assert isinstance(raw, OverlongLine)
            errors.append(LineError(number, raw.prefix, raw.error()))
            continue
        try:
            row = answer_row_of(raw, number, batch_id, file_id, kind, json_bytes)
            if row is None:  # not an answer: read in full
                try:
                    obj = loads(raw)
                except decode_error as exc:
                    if raw and not raw.isspace():  # a blank line is no error (nor JSON)
                        errors.append(LineError(number, raw, f"not valid JSON: {exc}"))
                    continue
                if type(obj) is not dict:
                    raise ValueError(f"not a JSON object but {type(obj).__name__}")
                row = row_of(obj, number, batch_id, file_id, kind, json_bytes)
        except ValueError as exc:
            errors.append(LineError(number, raw, str(exc)))
            continue
        if nul_unsafe and _has_nul(row):
            errors.append(LineError(number, raw, _NUL_ERROR))
            continue
        yield row


def is_whole_json(raw: bytes) -> bool:
    """Whether the line is one whole JSON value, as either reading takes it (a file's
    last line without a newline that is not was cut short). orjson reads what msgspec
    nests too deep to skip; msgspec what orjson's numbers cannot hold (1e400)."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            msgspec.json.decode(raw, type=msgspec.Raw)
        except (msgspec.DecodeError, RecursionError):
            return False
    return True


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
