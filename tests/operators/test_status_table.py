"""The status table's later pages (`status --limit 0` past the first page) are drawn by
`later_page`, not by a rich Table: the same text as a Table with the first page's column
widths would print, colours included, and, on a page wider than the terminal, no
never-cut cell (batch id, status, cancel state) cut short."""

from __future__ import annotations

import io
import random

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.cli import status_commands as sc
from orchestrator.cli.render import spanned

NEVER_CUT = set(sc.STATUS_COLUMNS) - set(sc.LEAVE_OUT)
CELLS = [
    "",  # the overdue column when not overdue
    "-",
    "a",
    "batch_6f0c1e2a9b8d4c7e5f3a2b1c0d9e8f7a",
    "in_progress",
    "failed",
    "cancelling",
    "failed: http 500",
    "OVERDUE",
    "10/2/0",
    "3h07m",
    "日本語のエラー",  # two cells a character
    "üñïçødé text",
    "HTTP 500 from POST /v1/batches/cancel: the server had an error while processing",
]


def _as_a_rich_table(rows: list[dict[str, str]], layout: sc.Layout) -> Table:
    """What `later_page` drew before: a Table with the first page's widths."""
    table = Table(box=None, pad_edge=False, show_header=False)
    for title in layout.shown:
        width = layout.widths[title]
        if title in NEVER_CUT:
            width = max(width, *(cell_len(row[title]) for row in rows))
        table.add_column(title, no_wrap=True, width=width, overflow="ellipsis")
    for row in rows:
        table.add_row(*(Text(row[t], style=sc.cell_style(t, row[t])) for t in layout.shown))
    return table


def _printed(renderable: Table | Text, width: int, colour: bool) -> str:
    """As `print_status` prints it: a first page's Table with crop=False, a later
    page's Text with soft_wrap."""
    console = Console(
        file=io.StringIO(),
        width=width,
        color_system="truecolor" if colour else None,
        force_terminal=colour,
        highlight=False,
    )
    if isinstance(renderable, Table):
        console.print(renderable, crop=False)
    else:
        console.print(renderable, soft_wrap=True)
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    return text


def colour_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour on, and not a dumb terminal (rich draws one 80 columns wide, whatever
    width it is given)."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def _rows(pick: random.Random, columns: tuple[str, ...], n: int) -> list[dict[str, str]]:
    return [{title: pick.choice(CELLS) for title in columns} for _ in range(n)]


def _page_width(rows: list[dict[str, str]], layout: sc.Layout) -> int:
    return spanned(
        max(layout.widths[t], *(cell_len(r[t]) for r in rows))
        if t in NEVER_CUT
        else layout.widths[t]
        for t in layout.shown
    )


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("room", [80, 120, 200, 400])
def test_a_later_page_prints_what_a_rich_table_of_the_same_widths_would(
    room: int, wide: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    colour_terminal(monkeypatch)
    pick = random.Random(room * 2 + wide)
    columns: tuple[str, ...] = sc.STATUS_COLUMNS
    if wide:
        columns = (*sc.STATUS_COLUMNS[:3], *sc.WIDE_COLUMNS, *sc.STATUS_COLUMNS[3:])
    compared = 0
    for _ in range(100):
        _, layout = sc.status_table(_rows(pick, columns, 5), room, wide=wide)
        # Any cell where a long one is cut with an ellipsis; a never-cut one that fits.
        later = [
            {
                title: pick.choice(
                    [c for c in CELLS if cell_len(c) <= layout.widths[title]]
                    if title in NEVER_CUT
                    else CELLS
                )
                for title in columns
            }
            for _ in range(pick.randint(1, 8))
        ]
        if _page_width(later, layout) > room:
            continue  # only the never-cut columns left, and wider than the room: below
        for colour in (False, True):
            ours = _printed(sc.later_page(later, layout), room, colour)
            assert ours == _printed(_as_a_rich_table(later, layout), room, colour)
        compared += 1
    assert compared >= 10


def test_a_later_page_wider_than_the_terminal_keeps_every_never_cut_cell_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where a rich Table squeezed every column to the terminal, ids too."""
    colour_terminal(monkeypatch)
    first = [{**dict.fromkeys(sc.STATUS_COLUMNS, "-"), "overdue": ""} for _ in range(2)]
    _, layout = sc.status_table(first, 80)
    long_id = "batch_" + "f" * 90  # wider than the terminal on its own
    later = [{**first[0], "batch": long_id, "status": "failed", "cancel": "failed: http 500"}]
    out = _printed(sc.later_page(later, layout), 80, True)
    assert out.count("\n") == 1  # one line: the terminal wraps it, nothing cut
    assert long_id in out
    assert "\x1b[31mfailed" in out and "\x1b[31mfailed: http 500" in out
