"""`results -o table --limit 0` on a big file: the table is printed a page at a time."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from orchestrator.cli.render import TABLE_PAGE_ROWS
from orchestrator.cli.result_writers import CSV_COLUMNS, TABLE_COLUMNS, write_records, write_table


def _console(out: io.StringIO) -> Console:
    return Console(file=out, width=200, color_system=None, highlight=False)


def _records(n: int, printed: io.StringIO, held: list[int]) -> Iterator[dict[str, Any]]:
    """n records; before each, how many were handed out and not yet printed."""
    for i in range(n):
        held.append(i - printed.getvalue().count("req-"))
        yield {"custom_id": f"req-{i}", "file_kind": "output", "body": {"n": i}}


def test_showing_every_result_holds_one_page_not_the_file() -> None:
    out = io.StringIO()
    held: list[int] = []
    n = 3 * TABLE_PAGE_ROWS + 7
    shown, more = write_table(_console(out), _records(n, out, held), TABLE_COLUMNS, None)
    assert (shown, more) == (n, False)
    assert max(held) <= TABLE_PAGE_ROWS
    text = out.getvalue()
    assert [f"req-{i} " in text for i in (0, TABLE_PAGE_ROWS, n - 1)] == [True] * 3
    assert text.count("custom id") == 1  # the header on the first page only


def test_a_limit_stops_at_the_limit_and_says_there_are_more() -> None:
    out = io.StringIO()
    held: list[int] = []
    shown, more = write_table(_console(out), _records(10, out, held), TABLE_COLUMNS, 4)
    assert (shown, more) == (4, True)
    assert "req-3 " in out.getvalue() and "req-4 " not in out.getvalue()


def test_long_bodies_shorten_only_the_free_text_columns() -> None:
    """At 100 columns with real bodies, the ids, kinds and codes were cut to `…` too."""
    out = io.StringIO()
    records = [
        {
            "custom_id": f"request-{i:04d}",
            "file_kind": "output",
            "status_code": 200,
            "body": {"choices": [{"message": {"content": "word " * 200}}]},
        }
        for i in range(3)
    ]
    console = Console(file=out, width=100, color_system=None, highlight=False)
    write_table(console, records, TABLE_COLUMNS, None)
    rows = out.getvalue().splitlines()[1:]
    assert len(rows) == 3  # one line a result
    for i, row in enumerate(rows):
        assert row.split()[:3] == [f"request-{i:04d}", "output", "200"]
        assert row.rstrip().endswith("…") and len(row) <= 100


# C1 (NEL, CSI), DEL, bidi override, line separator, zero width, a tag (beyond the BMP)
HOSTILE = "ok\x85\x9b31m\x7f\u202eevil\u2028\u200b\U000e0041 and é, 中文"


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_json_output_escapes_what_a_terminal_would_act_on(fmt: str) -> None:
    record = {"custom_id": HOSTILE, "body": {"content": HOSTILE, "n": 1}, "status_code": 200}
    out = io.StringIO()
    write_records(out, iter([dict(record)]), fmt, CSV_COLUMNS)
    text = out.getvalue()
    assert text.isascii() is False  # é and 中文 stay as they are: only the unsafe escaped
    assert all(char.isprintable() for char in text.replace("\n", ""))
    assert "\\u202e" in text and "\\udb40\\udc41" in text and "é, 中文" in text
    value = json.loads(text)["results"][0] if fmt == "json" else json.loads(text)
    assert value == record  # the same values to a JSON reader
