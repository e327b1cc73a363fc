"""Small formatting helpers for the operators' tables: ages, times, cells."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from orchestrator.core import json_text
from orchestrator.core.visible import visible

NONE = "-"
# Tables here have no box and no padding at their edges: one space each side of every
# column boundary.
COLUMN_GAP = 2
# Rows a table holds before it is printed: `--limit 0` over 100,000 batches or a
# 200,000-line file holds one page, not all of them.
TABLE_PAGE_ROWS = 500


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


def plain(value: object) -> str:
    """A cell's text, markup not escaped: `-` for nothing, JSON for dicts and lists,
    whitespace runs made one space (error texts can hold newlines), and every other
    control character spelled out (`visible`): cells hold text from outside."""
    if value is None or value == "":
        return NONE
    if isinstance(value, datetime):
        text = moment(value)
    elif isinstance(value, dict | list | json_text.Fragment):
        text = json_text.text_of(value)
    else:
        text = str(value)
    return visible(" ".join(text.split()))


def fit(text: str, width: int) -> str:
    """The text as exactly `width` cells, as a rich table draws a no-wrap cell with an
    ellipsis: padded with spaces, or cut to `width - 1` cells and `…`. For a cell's
    text as `plain` makes it: no control characters, which rich measures as none."""
    if width < 1:
        return ""
    if text.isascii() and text.isprintable():  # one cell a character: nearly every cell
        return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"
    from rich.text import Text  # wide characters: rich's own measure

    cut = Text(text)
    cut.truncate(width, overflow="ellipsis", pad=True)
    return cut.plain


def cell(value: object, *, width: int | None = None) -> str:
    """A table cell as markup: `plain`, shortened to `width`, markup escaped (ids and
    error texts can hold square brackets)."""
    text = plain(value)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    from rich.markup import escape  # here: a command that prints no table needs no rich

    return escape(text)


def spanned(widths: Iterable[int]) -> int:
    """How wide a table of columns this wide is, gaps included."""
    listed = list(widths)
    return sum(listed) + COLUMN_GAP * max(0, len(listed) - 1)


def counts(total: int | None, completed: int | None, failed: int | None) -> str:
    if total is None:
        return NONE
    return f"{completed or 0}+{failed or 0}/{total}"


def counts_in_words(total: int | None, completed: int | None, failed: int | None) -> str:
    """The server's request counts for a person: `50 done + 2 failed of 200`."""
    if total is None:
        return "not known yet"
    return f"{completed or 0} done + {failed or 0} failed of {total}"
