"""How `orchestrator results` writes result records: `-o jsonl|json|csv|table`.

Results hold text from outside (custom ids, model output, server error messages):

- CSV: every cell is quoted, and a cell that begins with a character a spreadsheet
  reads as the start of a formula gets a leading `'` (OWASP's advice on CSV
  injection), so `=HYPERLINK(...)` stays text.
- JSON lines and JSON are written verbatim (JSON-escaped): every value as stored.
- A table, for a person, shows each cell with its control characters spelled out,
  one line a result, the body shortened to the room left.

The console's downloads use the same writers (`write_rows`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.cli.output import fields_of
from orchestrator.cli.render import TABLE_PAGE_ROWS, plain
from orchestrator.core import json_text
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
        out.write(json_text.dumps(record).decode())
        out.write("\n")
        written += 1
    return written


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
        out.write(json_text.dumps(record).decode())
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
        # Text, not markup: custom ids and model output can hold square brackets.
        page.add_row(*(Text(plain(record.get(c))) for c in columns))
        shown += 1
    if page.row_count:
        console.print(page)
    return shown, more


def _table_page(columns: tuple[str, ...], *, header: bool) -> Table:
    table = Table(box=None, pad_edge=False, show_header=header)
    for column in columns:
        last = column == columns[-1]
        table.add_column(
            column.replace("_", " "),
            no_wrap=True,
            overflow="ellipsis",
            ratio=1 if last else None,
            min_width=10 if last else None,
        )
    return table
