"""JSON text of what the server sent: what orjson cannot read or write back stays text."""

from __future__ import annotations

import orjson
import pytest

from orchestrator.cli.render import plain
from orchestrator.console.render import as_json
from orchestrator.core import json_text


def test_what_orjson_reads_and_writes_is_read_into_objects() -> None:
    assert json_text.loads(b'{"b":[1,2.5,"\\u00e9"],"a":null}') == {"b": [1, 2.5, "é"], "a": None}
    assert json_text.dumps({"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'.encode()
    assert json_text.dumps({"b": 1, "a": 2}, sort_keys=True) == b'{"a":2,"b":1}'
    assert not isinstance(json_text.loads("[" * 254 + "]" * 254), json_text.Fragment)


@pytest.mark.parametrize(
    "text",
    [
        "[1e400, -1e400]",  # beyond a double: orjson refuses to read it
        "[" + "7" * 5000 + "]",  # Python's json refuses an integer over 4,300 digits
        "[" * 255 + "]" * 255,  # orjson reads it, but writes 254 levels
        "[" * 5000 + "]" * 5000,  # deeper than any reader's stack
    ],
)
def test_what_orjson_cannot_read_or_write_back_is_kept_as_its_text(text: str) -> None:
    value = json_text.loads(text)
    assert isinstance(value, json_text.Fragment)
    record = {"custom_id": "a", "body": value}
    assert json_text.dumps(record) == b'{"custom_id":"a","body":' + text.encode() + b"}"
    assert (
        json_text.dumps(record, sort_keys=True)
        == b'{"body":' + text.encode() + b',"custom_id":"a"}'
    )
    assert json_text.text_of(value) == text
    assert as_json(value) == text  # the console
    assert plain(value).startswith(text[:20])  # the table (whitespace runs made one)


def test_bytes_read_as_text_does() -> None:
    assert json_text.loads(b"[1e400]") is not None
    assert json_text.text_of(json_text.loads(b"[1e400]")) == "[1e400]"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b"[1e400]")


def test_a_long_list_of_objects_is_read_into_objects_not_kept_as_text() -> None:
    # a batch's errors may list thousands of objects: many brackets, two levels
    errors = [{"code": "invalid", "line": n, "param": ["a", {"b": n}]} for n in range(3000)]
    assert json_text.loads(orjson.dumps(errors)) == errors
    assert json_text.loads(orjson.dumps({"data": errors}).decode()) == {"data": errors}
    deep: object = errors  # four levels: a list, a dict, a list, a dict
    for _ in range(250):  # 254 levels, as many as orjson writes: still objects
        deep = [deep]
    text = orjson.dumps(deep)
    assert json_text.loads(text) == deep
    assert isinstance(json_text.loads(b"[" + text + b"]"), json_text.Fragment)


@pytest.mark.parametrize(
    "text",
    [
        '{"n":123456789012345678901234567890}',
        "18446744073709551616",  # 2**64: one past what orjson reads as an int
        b"[-9223372036854775809]",  # -2**63 - 1
        '{"a": [1, {"b": 99999999999999999999}]}',
    ],
)
def test_an_integer_beyond_64_bits_is_kept_as_its_text_not_read_as_a_float(
    text: str | bytes,
) -> None:
    value = json_text.loads(text)
    assert isinstance(value, json_text.Fragment)
    as_text = text if isinstance(text, str) else text.decode()
    assert json_text.text_of(value) == as_text
    # what orjson reads exactly stays objects, long digit runs elsewhere too
    assert json_text.loads("[18446744073709551615, -9223372036854775808]") == [
        2**64 - 1,
        -(2**63),
    ]
    assert json_text.loads('{"s":"1234567890123456789012345","f":0.12345678901234567890123}') == {
        "s": "1234567890123456789012345",
        "f": 0.12345678901234568,
    }
