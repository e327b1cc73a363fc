"""JSON text of what the server sent, read and written: orjson, and Python's json for
what orjson refuses.

An answer's body is stored as the server sent it (``core/result_lines.py``): JSON
that msgspec and PostgreSQL's ``json`` accept, which orjson may not read (a number
beyond a double or 64 bits: ``1e400``) or write (nesting deeper than 254 levels).
Python's json does both, slowly; only those values pay for it. Every reader of the
body column and every writer of a body (CSV, JSON lines, the archive, the console)
goes through here.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "loads"]


def loads(text: str | bytes) -> Any:
    """The value of JSON text (a number beyond a double reads as infinity)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dumps(value: object, *, sort_keys: bool = False) -> bytes:
    """Compact JSON text of ``value`` as UTF-8 (an infinity is written as null)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
        return text.encode()
