"""JSON text of what the server sent, read and written without ever failing on it.

An answer's body is stored as the server sent it (``core/result_lines.py``): JSON
that msgspec and PostgreSQL's ``json`` accept, which orjson may not read (a number
beyond a double: ``1e400``, an integer of thousands of digits), may read only as an
approximation (an integer beyond 64 bits: orjson gives a float, silently) or cannot
write (nesting deeper than 254 levels). Such a text is read as an ``orjson.Fragment``:
orjson writes it back exactly as it is, without parsing it or recursing into it, so no
reader's or writer's stack depth decides what can be shown (Python's json would, and
refuses integers over 4,300 digits). Every reader of the body column (but the prune's
archive, which copies the stored text: ``db/retention.py``) and every writer of a body
(CSV, JSON lines, the table, the archive, the console) goes through here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["Fragment", "dumps", "loads", "text_of"]

Fragment = orjson.Fragment
_ORJSON_WRITES_LEVELS = 254
# orjson reads an integer as an int from -2**63 to 2**64 - 1, beyond as a float. One
# beyond has at least 19 digits, so a text without a run of 19 (most) is not looked at
# again. The run is found with every digit made a 0 (bytes.translate, then a substring
# search: both C loops; a regex's [0-9]{19} was ten times slower).
_ORJSON_INTS = (-(2**63), 2**64 - 1)
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


def loads(text: str | bytes) -> Any:
    """The value of JSON text, or the text as a ``Fragment`` where orjson cannot read
    it exactly or could not write it back."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Fragment(text)
    if type(value) in (list, dict) and _nests_past_writing(value, text):
        return Fragment(text)
    if _may_hold_a_long_integer(text) and _rounds_an_integer(text):
        return Fragment(text)
    return value


def _may_hold_a_long_integer(text: str | bytes) -> bool:
    raw = text.encode() if isinstance(text, str) else text
    return _NINETEEN_DIGITS in raw.translate(_DIGITS_TO_ZERO)


class _BeyondOrjson(Exception):
    pass


def _exact_int(digits: str) -> int:
    number = int(digits)
    if not _ORJSON_INTS[0] <= number <= _ORJSON_INTS[1]:
        raise _BeyondOrjson
    return number


def _rounds_an_integer(text: str | bytes) -> bool:
    """Whether the text has an integer that orjson reads as a float. Python's json
    calls ``parse_int`` only for integers (the digits in strings, fractions and
    exponents are not), and is called only on a text orjson read (so valid) and
    at most 254 levels deep (``loads`` checked): within its recursion limit."""
    try:
        json.loads(text, parse_int=_exact_int)
    except (_BeyondOrjson, ValueError):  # ValueError: an int() of over 4,300 digits
        return True
    return False


def _nests_past_writing(value: object, text: str | bytes) -> bool:
    """Whether ``value`` nests deeper than orjson writes. Each level opens a bracket,
    so a text with fewer brackets (most) need not be walked: only a long list of
    objects, or a deep one, is (a batch's ``errors`` may list thousands)."""
    if isinstance(text, str):
        brackets = text.count("[") + text.count("{")
    else:
        brackets = text.count(b"[") + text.count(b"{")
    return brackets > _ORJSON_WRITES_LEVELS and _deeper_than(value, _ORJSON_WRITES_LEVELS)


def _deeper_than(value: object, levels: int) -> bool:
    """Whether lists and dicts nest in ``value`` more than ``levels`` deep; no recursion."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > levels:
            return True
        inner = item.values() if isinstance(item, dict) else item
        assert isinstance(inner, Iterable)
        stack.extend((child, depth + 1) for child in inner if type(child) in (list, dict))
    return False


def dumps(value: object, *, sort_keys: bool = False) -> bytes:
    """Compact JSON text of ``value`` as UTF-8, a ``Fragment`` as it is."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)


def text_of(value: object) -> str:
    """JSON text of a value read by ``loads`` (a ``Fragment``, a list, a dict, ...)."""
    return dumps(value).decode()
