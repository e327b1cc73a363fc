"""JSON text of what the server sent: what orjson refuses goes through Python's json."""

from __future__ import annotations

import json

import orjson
import pytest

from orchestrator.core import json_text


def test_what_orjson_reads_and_writes_is_orjsons() -> None:
    assert json_text.loads(b'{"b":[1,2.5,"\\u00e9"],"a":null}') == {"b": [1, 2.5, "é"], "a": None}
    assert json_text.dumps({"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'.encode()
    assert json_text.dumps({"b": 1, "a": 2}, sort_keys=True) == b'{"a":2,"b":1}'


def test_numbers_beyond_a_double_or_64_bits_are_read_not_refused() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads("[1e400]")
    assert json_text.loads("[1e400, -1e400]") == [float("inf"), float("-inf")]
    big = 123456789012345678901234567890  # orjson alone reads it as a float; Python exactly
    assert json_text.loads(f"[1e400, {big}]") == [float("inf"), big]
    assert json_text.dumps({"n": [big]}) == f'{{"n":[{big}]}}'.encode()  # exact, not a float


@pytest.mark.parametrize("sort_keys", [False, True])
def test_a_value_nested_deeper_than_orjson_writes_is_written(sort_keys: bool) -> None:
    deep: object = {"z": 1, "a": 2}
    for _ in range(300):  # orjson writes 254 levels
        deep = [deep]
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(deep)
    text = json_text.dumps(deep, sort_keys=sort_keys)
    assert json.loads(text) == deep and b" " not in text
    assert (b'{"a":2,"z":1}' in text) is sort_keys
