from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.line_splitter import OVERLONG_PREFIX, Line, LineSplitter, OverlongLine
from orchestrator.core.result_lines import (
    LineError,
    ParsedChunk,
    Row,
    _row,
    iter_rows,
    parse_lines,
    printable,
)


def parse(lines: Sequence[Line], first: int, *, nul_unsafe: bool = False) -> ParsedChunk:
    return parse_lines(
        lines, first, batch_id="batch_1", file_id="file-o", kind="output", nul_unsafe=nul_unsafe
    )


def line(custom_id: str, **extra: object) -> bytes:
    record: dict[str, object] = {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": f"req_{custom_id}", "body": {"x": 1}},
        "error": None,
    }
    record.update(extra)
    return orjson.dumps(record)


def plain(lines: Sequence[Line] | Line) -> list[bytes]:
    """Lines under the default cap: every one of them bytes."""
    many = [lines] if isinstance(lines, bytes | OverlongLine) else lines
    out = [line for line in many if isinstance(line, bytes)]
    assert len(out) == len(many)
    return out


@given(st.binary(max_size=3000), st.lists(st.integers(1, 50), max_size=40))
def test_lines_survive_any_chunking(data: bytes, cuts: list[int]) -> None:
    splitter = LineSplitter()
    got: list[bytes] = []
    position = 0
    for size in cuts:
        got += plain(splitter.feed(data[position : position + size]))
        position += size
    got += plain(splitter.feed(data[position:]))
    (tail,) = plain(splitter.tail())
    assert got + ([tail] if tail else []) == (
        data.split(b"\n")[:-1] + ([data.rsplit(b"\n", 1)[-1]] if tail else [])
    )
    assert b"\n".join(got) + (b"\n" if got else b"") + tail == data
    assert splitter.bytes == len(data)
    assert splitter.sha256 == hashlib.sha256(data).hexdigest()
    assert splitter.complete_lines == data.count(b"\n")


def test_a_long_line_arriving_in_many_pieces_is_joined_once() -> None:
    splitter = LineSplitter()
    big = b"x" * 10_000
    for start in range(0, len(big), 7):
        assert splitter.feed(big[start : start + 7]) == []
    assert splitter.feed(b"\nnext") == [big]
    assert splitter.tail() == b"next"


def test_fields_are_extracted_and_numbered_by_physical_line() -> None:
    error_line = orjson.dumps(
        {
            "id": "batch_req_2",
            "custom_id": "b",
            "response": None,
            "error": {"code": "batch_cancelled", "message": "cancelled before it ran"},
        }
    )
    parsed = parse([line("a"), b"", b"  \r", error_line], 10)
    assert parsed.errors == []
    assert [r[:8] for r in parsed.rows] == [
        ("batch_1", "a", "batch_req_a", "file-o", "output", 10, 200, "req_a"),
        ("batch_1", "b", "batch_req_2", "file-o", "output", 13, None, None),
    ]
    assert orjson.loads(parsed.rows[0][8] or "") == {"x": 1}
    assert parsed.rows[1][8:] == (None, "batch_cancelled", "cancelled before it ran")


def test_bad_lines_become_line_errors_and_the_rest_go_on() -> None:
    lines = [
        b"{not json",
        b"[1, 2]",
        orjson.dumps({"id": "x", "response": None}),
        line("c" * 513),
        line("ok", id="i" * 129),
        line("fine"),
    ]
    parsed = parse(lines, 1)
    assert [r[1] for r in parsed.rows] == ["fine"]
    assert [(e.line_number, e.error.split(":")[0]) for e in parsed.errors] == [
        (1, "not valid JSON"),
        (2, "not a JSON object but list"),
        (3, "no custom_id (a non-empty string) in the line"),
        (4, "custom_id longer than 512 characters"),
        (5, "id longer than 128 characters"),
    ]
    assert parsed.errors[0].raw == b"{not json"


def test_unexpected_types_are_dropped_not_fatal() -> None:
    weird = orjson.dumps(
        {
            "custom_id": "w",
            "id": 7,
            "response": {"status_code": "200", "request_id": 5, "body": [1, 2]},
            "error": {"code": 42, "message": None},
        }
    )
    (row,) = parse([weird], 1).rows
    assert row[2] is None and row[6] is None and row[7] is None
    assert row[8] == "[1,2]" and row[9] == "42"


def test_nul_in_a_text_field_is_kept_raw_where_the_database_cannot_store_it() -> None:
    in_body = line("b", response={"status_code": 200, "body": {"text": "a\u0000b"}})
    in_text = [
        line("n\u0000"),
        line("i", id="x\u0000"),
        line("r", response={"status_code": 200, "request_id": "q\u0000"}),
        line("c", error={"code": "c\u0000", "message": "m"}),
        line("m", error={"code": "c", "message": "m\u0000"}),
    ]
    assert len(parse([in_body, *in_text], 1).rows) == 6
    parsed = parse([in_body, *in_text], 1, nul_unsafe=True)
    # the body is JSON text: U+0000 is the escape \u0000 there, which json keeps
    assert [row[1] for row in parsed.rows] == ["b"]
    assert parsed.rows[0][8] == '{"text":"a\\u0000b"}'
    assert [e.line_number for e in parsed.errors] == [2, 3, 4, 5, 6]
    assert all("U+0000" in e.error for e in parsed.errors)


def test_the_nul_check_looks_at_the_decoded_fields_not_the_line() -> None:
    """U+0000 reaches a field only through the escape \\u0000: a raw NUL byte does not
    parse, and a backslash before "u0000" is text, stored as it is."""
    raw_nul = b'{"custom_id": "n\x00"}'
    escaped_backslash = line("t", id="\\u0000")  # the text backslash-u-0-0-0-0
    parsed = parse([raw_nul, escaped_backslash], 1, nul_unsafe=True)
    assert [row[2] for row in parsed.rows] == ["\\u0000"]
    assert [(e.line_number, e.error.split(":")[0]) for e in parsed.errors] == [
        (1, "not valid JSON")
    ]


def test_printable_keeps_every_byte_visible() -> None:
    assert printable(b"ok \xff\x00 end") == "ok \\xff\\x00 end"


# -- a cap on the length of a line ----------------------------------------------------


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    st.lists(st.integers(1, 30), max_size=40),
    st.integers(5, 25),
    st.booleans(),
)
def test_lines_over_the_cap_become_their_size_and_prefix_at_any_chunking(
    lines: list[bytes], cuts: list[int], cap: int, final_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    splitter = LineSplitter(max_line=cap)
    got: list[Line] = []
    position = 0
    for size in cuts:
        got += splitter.feed(data[position : position + size])
        position += size
    got += splitter.feed(data[position:])
    tail = splitter.tail()
    if tail:
        got.append(tail)
    expected_lines = data.split(b"\n")
    if expected_lines and expected_lines[-1] == b"":
        expected_lines.pop()
    expected: list[Line] = [
        OverlongLine(line[: min(cap, OVERLONG_PREFIX)], len(line), cap) if len(line) > cap else line
        for line in expected_lines
    ]
    assert got == expected
    assert splitter.bytes == len(data)
    assert splitter.sha256 == hashlib.sha256(data).hexdigest()


def test_a_line_that_never_ends_holds_no_more_than_the_cap() -> None:
    splitter = LineSplitter(max_line=1000)
    for _ in range(10_000):  # 100 MB of one line, 10 KB at a time
        assert splitter.feed(b"a" * 10_000) == []
        assert sum(map(len, splitter._pending)) <= 1000
    assert splitter.feed(b'bc\n{"custom_id": "next"}\n') == [
        OverlongLine(b"a" * 1000, 100_000_002, 1000),
        b'{"custom_id": "next"}',
    ]


def test_an_overlong_line_is_a_line_error_naming_the_cap_and_its_size() -> None:
    chunk = parse([line("a"), OverlongLine(b'{"custom_id": "b", ', 20_000_000, 1 << 24)], 7)
    assert [row[1] for row in chunk.rows] == ["a"]
    (error,) = chunk.errors
    assert error.line_number == 8
    assert error.raw == b'{"custom_id": "b", '
    assert "20000000 bytes" in error.error
    assert "cap of 16777216 bytes" in error.error
    assert "ingest_max_line_bytes" in error.error


def test_a_line_nested_deeper_than_can_be_written_is_a_line_error_not_a_crash() -> None:
    # orjson reads 1,024 levels but writes 254; str() of a deep list overflows the stack
    deep = b"[" * 1000 + b"]" * 1000
    lines = [
        b'{"custom_id":"body","response":{"status_code":200,"body":' + deep + b"}}",
        b'{"custom_id":"code","error":{"code":' + deep + b',"message":"m"}}',
        b'{"custom_id":"message","error":{"code":"c","message":' + deep + b"}}",
        line("ok", response={"status_code": 200, "body": "a string"}),
    ]
    parsed = parse(lines, 1)
    assert [row[1] for row in parsed.rows] == ["ok"]
    assert [e.line_number for e in parsed.errors] == [1, 2, 3]
    assert "response.body cannot be stored" in parsed.errors[0].error
    assert "error.code cannot be stored" in parsed.errors[1].error
    assert "error.message cannot be stored" in parsed.errors[2].error


def answer(body: bytes, custom_id: str = "a") -> bytes:
    """A line that answers its request, its body exactly these bytes."""
    return (
        b'{"id":"l","custom_id":"' + custom_id.encode() + b'","response":'
        b'{"status_code":200,"request_id":"r","body":' + body + b'},"error":null}'
    )


def rows_of(lines: Sequence[Line], *, json_bytes: bool) -> tuple[list[Row], list[LineError]]:
    errors: list[LineError] = []
    rows = list(
        iter_rows(
            lines, 1, batch_id="b", file_id="f", kind="output", errors=errors, json_bytes=json_bytes
        )
    )
    return rows, errors


@pytest.mark.parametrize("json_bytes", [False, True])
def test_an_answers_body_is_stored_as_the_server_sent_it(json_bytes: bool) -> None:
    sent = b'{ "x" : 1, "s": "caf\\u00e9 caf\xc3\xa9", "big": 12345678901234567890123 }'
    (row,), errors = rows_of([answer(sent)], json_bytes=json_bytes)
    assert errors == []
    assert row[:8] == ("b", "a", "l", "f", "output", 1, 200, "r")
    body = row[8]
    assert (body if isinstance(body, str) else bytes(body or b"")) == (
        sent if json_bytes else sent.decode()
    )
    assert row[9:] == (None, None)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"s":"\xff\xfe"}', "not valid JSON"),  # the body's UTF-8, which msgspec skips
        (b'{"s":"\xed\xa0\x80"}', "not valid JSON"),  # a surrogate, UTF-8 encoded
        (b'{"s":"\\ud800"}', "not valid JSON"),  # a lone surrogate
        (b'{"s":"a\tb"}', "not valid JSON"),  # a raw control character
        (b'{"s":"\\q"}', "not valid JSON"),
        (b"[NaN]", "not valid JSON"),
        (b"[1,]", "not valid JSON"),
        (b"[01]", "not valid JSON"),
        (b"[" * 1000 + b"]" * 1000, "response.body cannot be stored"),
        (b"[" * 1100 + b"]" * 1100, "not valid JSON"),
    ],
)
def test_a_body_postgresql_or_orjson_would_refuse_is_a_line_error(body: bytes, error: str) -> None:
    for json_bytes in (False, True):
        rows, errors = rows_of([answer(body), answer(b"{}", "ok")], json_bytes=json_bytes)
        assert [row[1] for row in rows] == ["ok"]
        assert [(e.line_number, e.error.split(":")[0]) for e in errors] == [(1, error)]


def test_a_body_only_python_reads_is_stored_as_sent_not_lost() -> None:
    # orjson refuses a number beyond a double; PostgreSQL's json and Python's read it
    (row,), errors = rows_of([answer(b"[1e400]")], json_bytes=False)
    assert errors == [] and row[8] == "[1e400]"


def test_no_body_and_a_null_body_are_both_none() -> None:
    no_body = b'{"custom_id":"a","response":{"status_code":200}}'
    lines = [no_body, answer(b"null", "b"), answer(b" null ", "c")]
    rows, errors = rows_of(lines, json_bytes=True)
    assert errors == [] and [row[8] for row in rows] == [None, None, None]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)


@given(
    custom_id=json_values,
    line_id=json_values,
    response=st.none()
    | json_values
    | st.fixed_dictionaries(
        {}, optional={"status_code": json_values, "request_id": json_values, "body": json_values}
    ),
    error=st.none() | json_values,
    spaced=st.booleans(),
)
def test_the_answer_reading_gives_the_rows_and_errors_of_the_full_one(
    custom_id: object, line_id: object, response: object, error: object, spaced: bool
) -> None:
    record = {"custom_id": custom_id, "id": line_id, "response": response, "error": error}
    raw = json.dumps(record).encode() if spaced else orjson.dumps(record)
    rows, errors = rows_of([raw], json_bytes=True)
    try:
        expected: Row | str = _row(orjson.loads(raw), 1, "b", "f", "output", True)
    except ValueError as exc:
        expected = str(exc)
    if isinstance(expected, str):
        assert rows == [] and [e.error for e in errors] == [expected]
        return
    assert errors == [] and len(rows) == 1
    row = rows[0]
    assert row[:8] + row[9:] == expected[:8] + expected[9:]
    body, expected_body = row[8], expected[8]
    assert (body is None) == (expected_body is None)
    if body is not None and expected_body is not None:
        assert orjson.loads(bytes(body, "utf-8") if isinstance(body, str) else bytes(body)) == (
            orjson.loads(expected_body)
        )


def test_a_repeated_key_reads_as_the_full_reading_does_the_last_one_wins() -> None:
    lines = [
        b'{"custom_id":"a","custom_id":"b","response":{"status_code":200,"body":[1]}}',
        b'{"custom_id":"c","response":{"status_code":200,"body":[1]},"response":null}',
        b'{"custom_id":"d","response":{"status_code":200,"body":[1],"body":[2]}}',
    ]
    rows, errors = rows_of(lines, json_bytes=False)
    assert errors == []
    assert [(row[1], row[6], row[8]) for row in rows] == [
        ("b", 200, "[1]"),
        ("c", None, None),
        ("d", 200, "[2]"),
    ]
    assert rows == [
        _row(orjson.loads(raw), n, "b", "f", "output", False) for n, raw in enumerate(lines, 1)
    ]
