"""`results -o table --limit 0` on a big file: the table is printed a page at a time."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from orchestrator.cli.render import TABLE_PAGE_ROWS
from orchestrator.cli.result_writers import TABLE_COLUMNS, write_table


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
