"""How `orchestrator results` writes result records: `-o jsonl|json|csv|table`.

Results hold text from outside (custom ids, model output, server error messages):

- CSV: every cell is quoted, and a cell that begins with a character a spreadsheet
  reads as the start of a formula gets a leading `'` (OWASP's advice on CSV
  injection), so `=HYPERLINK(...)` stays text.
- JSON lines and JSON hold every value as stored, JSON-escaped; the characters a
  terminal acts on or that make text read as other text (Unicode's Cc, Cf, Zl and
  Zp: C1 controls, bidi overrides, ...) are written as `\\uXXXX` escapes, as
  `status -o json` writes them: the same values to a JSON reader, inert on a screen.
- A table, for a person, shows each cell with its control characters spelled out,
  one line a result, the free text (error message, body) shortened to the room left.

The console's downloads use the same writers (`write_rows`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.cli.output import fields_of
from orchestrator.cli.render import TABLE_PAGE_ROWS, plain
from orchestrator.core import json_text
from orchestrator.core.visible import UNSAFE
from orchestrator.db.queries import ResultRow

CSV_COLUMNS = (
    "custom_id",
    "file_kind",
    "file_id",
    "line_number",
    "line_id",
    "status_code",
    "request_id",
    "error_code",
    "error_message",
    "body",
)
# A person's table: the columns asked first; `-o jsonl` has every field.
TABLE_COLUMNS = ("custom_id", "file_kind", "status_code", "error_code", "error_message", "body")
# The free text, shortened (an ellipsis) to fit; every other column is shown whole.
SHORTENED = ("error_message", "body")
# What spreadsheets (Excel, LibreOffice, Google Sheets) take as the start of a formula
# when a cell begins with it; the full-width forms too, as some convert them.
FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")
FORMULA_STARTS += ("\uff1d", "\uff0b", "\uff0d", "\uff20")  # full-width = + - @


def neutralised(value: object) -> str:
    """A CSV cell's text: a leading `'` when a spreadsheet would read it as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_rows(out: IO[str], rows: Iterable[ResultRow], fmt: str) -> int:
    return write_records(out, (fields_of(row) for row in rows), fmt, CSV_COLUMNS)


def write_records(
    out: IO[str], records: Iterable[dict[str, Any]], fmt: str, columns: tuple[str, ...]
) -> int:
    """Result records as JSON lines, one JSON document or CSV (`columns`, made safe)."""
    if fmt == "csv":
        return _write_csv(out, records, columns)
    if fmt == "json":
        return _write_json(out, records)
    written = 0
    for record in records:
        out.write(_json(record))
        out.write("\n")
        written += 1
    return written


def _json(record: dict[str, Any]) -> str:
    """A record's compact JSON text, every character `visible` would spell out written
    as a JSON escape (orjson escapes only U+0000-U+001F). Most text is printable, and
    one C scan (`isprintable`) says so; the regex runs only over text that is not."""
    text = json_text.dumps(record).decode()
    return text if text.isprintable() else UNSAFE.sub(_json_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    point = ord(match.group())
    if point < 0x10000:
        return f"\\u{point:04x}"
    point -= 0x10000  # beyond the BMP: a UTF-16 surrogate pair, as JSON spells it
    return f"\\u{0xD800 + (point >> 10):04x}\\u{0xDC00 + (point & 0x3FF):04x}"


def _write_csv(out: IO[str], records: Iterable[dict[str, Any]], columns: tuple[str, ...]) -> int:
    written = 0
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)
    writer.writerow(columns)
    for record in records:
        body = record["body"]
        record["body"] = json_text.text_of(body) if body is not None else ""
        writer.writerow([neutralised(record[c]) for c in columns])
        written += 1
    return written


def _write_json(out: IO[str], records: Iterable[dict[str, Any]]) -> int:
    """`{"results": [...]}`, one record a line inside it, written as it streams."""
    written = 0
    out.write('{"results": [')
    for record in records:
        out.write(",\n  " if written else "\n  ")
        out.write(_json(record))
        written += 1
    out.write("\n]}\n" if written else "]}\n")
    return written


def write_table(
    console: Console, records: Iterable[dict[str, Any]], columns: tuple[str, ...], limit: int | None
) -> tuple[int, bool]:
    """A table of at most `limit` records (None: all): (rows shown, were there more).

    Printed a page of ``TABLE_PAGE_ROWS`` at a time, the header on the first only, so
    showing every line of a 200,000-line file holds one page, not the file (each page
    sizes its own columns)."""
    shown = 0
    more = False
    page = _table_page(columns, header=True)
    for record in records:
        if limit is not None and shown >= limit:
            more = True
            break
        if page.row_count == TABLE_PAGE_ROWS:
            console.print(page)
            page = _table_page(columns, header=False)
        # Text, not markup: custom ids and model output can hold square brackets. Each
        # cell one line: a shortened one ends in an ellipsis, never wraps.
        page.add_row(*(Text(plain(record.get(c)), no_wrap=True) for c in columns))
        shown += 1
    if page.row_count:
        console.print(page)
    return shown, more


def _table_page(columns: tuple[str, ...], *, header: bool) -> Table:
    table = Table(box=None, pad_edge=False, show_header=header)
    for column in columns:
        # rich narrows the columns that may wrap first, and only when that is not
        # enough all of them evenly: ids, kinds and codes squeezed to `…` said nothing.
        # The free text "wraps" (its cells do not: `no_wrap` on each) to be the one cut.
        table.add_column(
            column.replace("_", " "), no_wrap=column not in SHORTENED, overflow="ellipsis"
        )
    return table
