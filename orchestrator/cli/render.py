"""Small formatting helpers for the operators' tables: ages, times, cells."""

from __future__ import annotations

from datetime import datetime

import orjson
from rich.markup import escape

NONE = "-"


def age(seconds: float) -> str:
    """`45s`, `12m05s`, `3h07m`, `2d04h`: coarse enough to read at a glance."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def moment(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else NONE


def cell(value: object, *, width: int | None = None) -> str:
    """A table cell: `-` for nothing, shortened to `width`, markup escaped (ids and
    error texts can hold square brackets)."""
    if value is None or value == "":
        return NONE
    if isinstance(value, datetime):
        text = moment(value)
    elif isinstance(value, dict | list):
        text = orjson.dumps(value).decode()
    else:
        text = str(value)
    text = " ".join(text.split())
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return escape(text)


def counts(total: int | None, completed: int | None, failed: int | None) -> str:
    if total is None:
        return NONE
    return f"{completed or 0}+{failed or 0}/{total}"
