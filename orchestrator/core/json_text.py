"""JSON text of what the server sent, read and written without ever failing on it.

An answer's body is stored as the server sent it (``core/result_lines.py``): JSON
that msgspec and PostgreSQL's ``json`` accept, which orjson may not read (a number
beyond a double: ``1e400``, an integer of thousands of digits) or write (nesting
deeper than 254 levels). Such a text is read as an ``orjson.Fragment``: orjson writes
it back exactly as it is, without parsing it or recursing into it, so no reader's or
writer's stack depth decides what can be shown (Python's json would, and refuses
integers over 4,300 digits). Every reader of the body column and every writer of a
body (CSV, JSON lines, the table, the archive, the console) goes through here.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["Fragment", "dumps", "loads", "text_of"]

Fragment = orjson.Fragment
_ORJSON_WRITES_LEVELS = 254


def loads(text: str | bytes) -> Any:
    """The value of JSON text, or the text as a ``Fragment`` where orjson cannot read
    it or could not write it back."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Fragment(text)
    if type(value) in (list, dict) and _may_nest_past_orjsons_writing(text):
        return Fragment(text)
    return value


def _may_nest_past_orjsons_writing(text: str | bytes) -> bool:
    """Each level opens a bracket: fewer than orjson writes and it can write the value
    (brackets inside strings only make this say yes where it need not)."""
    if isinstance(text, str):
        return text.count("[") + text.count("{") > _ORJSON_WRITES_LEVELS
    return text.count(b"[") + text.count(b"{") > _ORJSON_WRITES_LEVELS


def dumps(value: object, *, sort_keys: bool = False) -> bytes:
    """Compact JSON text of ``value`` as UTF-8, a ``Fragment`` as it is."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)


def text_of(value: object) -> str:
    """JSON text of a value read by ``loads`` (a ``Fragment``, a list, a dict, ...)."""
    return dumps(value).decode()
