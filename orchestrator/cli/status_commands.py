"""`orchestrator status` (a table of batches) and `orchestrator show BATCH_ID` (one in full)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.live import follow
from orchestrator.cli.output import FOR_PEOPLE, fields_of, row_limit
from orchestrator.cli.render import (
    COLUMN_GAP,
    TABLE_PAGE_ROWS,
    age,
    counts,
    fit,
    moment,
    plain,
    spanned,
)
from orchestrator.cli.selection import NEVER_SYNCED, Selector, selector_of
from orchestrator.core.cancel_state import CancelState
from orchestrator.core.status import UNOBSERVED, BatchStatus
from orchestrator.db.pause_state import SendingPause
from orchestrator.db.sqlite_reader import ReaderFailed, SqliteReader
from orchestrator.db.summaries import (
    BatchPage,
    BatchSummary,
    StatusRead,
    read_status,
    status_reading,
)
from orchestrator.errors import ConfigError, DatabaseError

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

ERROR = "last error"
STATUS_COLUMNS = (
    "batch",
    "status",
    "cancel",
    "age",
    "in status",
    "overdue",
    "answers",
    "errors",
    "requests",
    ERROR,
)
# `-o wide` adds these, after the status.
WIDE_COLUMNS = ("created", "endpoint", "model", "metadata")
# When a terminal is too narrow for every column, these are left out, first to last,
# until the rest fit. The batch id, status and cancel state are never left out or cut:
# `cancelling` and `cancelled` must not both read `can…`.
LEAVE_OUT = (
    "metadata",
    "endpoint",
    "model",
    "created",
    "requests",
    "errors",
    "answers",
    ERROR,
    "age",
    "in status",
    "overdue",
)
# The last error takes what room is left, on one line; narrower than this it says too
# little, so the column is left out instead.
MIN_ERROR_WIDTH = 20
# Cells that need a person, in colour (none under NO_COLOR or when not a terminal).
NEEDS_A_PERSON = "bold red"


# --- status -----------------------------------------------------------------------------


def run_status(ctx: Context) -> Exit:
    selector = selector_of(ctx.args)
    if ctx.args.watch:
        return watch_status(ctx, selector)
    with read_once(ctx, selector) as (read, now):  # rows stream from the database
        page, pause, synced = read.page, read.pause, read.synced
        fmt = ctx.output_format
        if fmt == "json":
            write_status_json(ctx, page, now, pause)
        elif fmt == "jsonl":
            for row in page.rows:
                ctx.emit_json_line(batch_record(row, now))
        elif fmt == "ids":
            ctx.emit_lines(row.id for row in page.rows)
        elif not page.shown and pause is None:  # nothing to draw: one line, rich not imported
            ctx.emit_lines([summary_line(page)])
        else:
            print_status(ctx, page, now, pause, wide=fmt == "wide")
    if fmt in FOR_PEOPLE and not page.matching and not selector.is_empty and synced is None:
        ctx.err.print(NEVER_SYNCED, markup=False)
    return Exit.OK


@contextmanager
def read_once(ctx: Context, selector: Selector) -> Iterator[tuple[StatusRead, datetime]]:
    """What status shows, and the database's now; its rows are read as the `with` body
    iterates them. On a plain SQLite file it is read through sqlite3 alone: importing
    SQLAlchemy would take most of status's time. Else, or when that reader cannot
    answer, through the database layer, as every command."""
    try:
        with ExitStack() as held:
            yield _sqlite_read(ctx, selector, held) or _database_read(ctx, selector, held)
    except ReaderFailed as exc:  # once rows were shown: reading again would repeat them
        # (sqlite3's error becomes ReaderFailed as the reader's transaction ends, in `held`)
        raise DatabaseError(f"reading the database failed part way: {exc}") from exc


def _sqlite_read(
    ctx: Context, selector: Selector, held: ExitStack
) -> tuple[StatusRead, datetime] | None:
    reader = SqliteReader.open(ctx.settings.database_url)
    if reader is None:
        return None
    held.callback(reader.close)
    try:
        now = reader.now()
        where = selector.batch_filter(now)
        read = status_reading(reader, where, now, limit=row_limit(ctx.args))
        return held.enter_context(read), now
    except ReaderFailed:
        return None  # read again, where a problem is reported as every command reports it


def _database_read(
    ctx: Context, selector: Selector, held: ExitStack
) -> tuple[StatusRead, datetime]:
    from orchestrator.db.server_clock import database_clock  # SQLAlchemy: only here

    db = ctx.database(read_only=True)  # rows stream: SQLite's one writer must not wait
    held.callback(db.dispose)
    now = database_clock(db).now()
    where = selector.batch_filter(now)
    return held.enter_context(status_reading(db, where, now, limit=row_limit(ctx.args))), now


def watch_status(ctx: Context, selector: Selector) -> Exit:
    """`status --watch`: the table, redrawn as batches change, until Ctrl-C (exit 0)."""
    if ctx.output_format not in ("table", "wide"):
        raise ConfigError("--watch draws a table for a person; scripts poll `status -o json`")
    from orchestrator.db.server_clock import database_clock

    db = ctx.database()

    def frame() -> bool:
        now = database_clock(db).now()
        where = selector.batch_filter(now)  # ages move on: counted from each frame's now
        read = read_status(db, where, now, limit=row_limit(ctx.args))
        print_status(ctx, read.page, now, read.pause, wide=ctx.output_format == "wide")
        return False

    try:
        return follow(ctx, frame, ctx.args.interval, until_settled=False)
    finally:
        db.dispose()


def batch_record(row: BatchSummary, now: datetime) -> dict[str, Any]:
    """One batch as JSON: the batches table's column names, `unobserved` as the table
    shows it, and what the table computes (ages by the database server's clock)."""
    return {
        **fields_of(row),
        "status": row.status or UNOBSERVED,
        "overdue": row.overdue,
        "age_seconds": round(row.seconds_since_created(now), 3),
        "seconds_in_status": round(row.seconds_in_status(now), 3),
    }


def write_status_json(
    ctx: Context, page: BatchPage, now: datetime, pause: SendingPause | None
) -> None:
    """`-o json`: one document, its batches written as they are read."""

    def rest(shown: int) -> dict[str, Any]:
        return {
            "shown": shown,
            "matching": page.matching,
            "more": page.matching - shown,
            "by_status": page.by_status,
            "paused": None if pause is None else {"until": pause.until, "reason": pause.reason},
        }

    ctx.emit_json_listing("batches", (batch_record(row, now) for row in page.rows), rest)


def print_status(
    ctx: Context, page: BatchPage, now: datetime, pause: SendingPause | None, *, wide: bool = False
) -> None:
    if pause is not None:
        # First, where it cannot be missed: no cancel is sent until someone acts.
        ctx.out.print(
            f"SENDING PAUSED until {moment(pause.until)}: fix the key, then "
            f"`orchestrator resume`. Why: {plain(pause.reason)}",
            style=NEEDS_A_PERSON,
            markup=False,
        )
    layout: Layout | None = None
    shown = 0
    for rows in pages(page.rows, TABLE_PAGE_ROWS):
        cells = [status_cells(row, now) for row in rows]
        # crop=False, soft_wrap: when even the never-cut columns are wider than the
        # terminal, their lines run past its edge (it wraps them) rather than lose the end
        # of an id.
        if layout is None:
            table, layout = status_table(cells, ctx.out.width, wide=wide)
            ctx.out.print(table, crop=False)
        else:
            ctx.out.print(later_page(cells, layout), soft_wrap=True)
        shown += len(rows)
    if layout is not None and layout.left_out:
        ctx.out.print(
            f"too narrow to show: {', '.join(layout.left_out)} (widen the terminal or use -o json)",
            markup=False,
        )
    ctx.out.print(summary_line(page, shown), markup=False)


def pages(rows: Iterable[BatchSummary], size: int) -> Iterator[list[BatchSummary]]:
    """The rows, `size` at a time, read as each page is asked for."""
    taken = iter(rows)
    while page := list(islice(taken, size)):
        yield page


def status_cells(row: BatchSummary, now: datetime) -> dict[str, str]:
    """One row of the status table, by column title, as plain text."""
    cancel = row.cancel_state or ""
    if row.cancel_outcome:
        cancel = f"{cancel}: {row.cancel_outcome}"
    errors = f"{row.errors}"
    if row.result_line_errors:
        errors += f" (+{row.result_line_errors} unreadable)"
    return {
        "batch": plain(row.id),
        "status": plain(row.status or UNOBSERVED),
        "cancel": plain(cancel),
        "age": age(row.seconds_since_created(now)),
        "in status": age(row.seconds_in_status(now)),
        "overdue": "OVERDUE" if row.overdue else "",
        "answers": f"{row.answers}",
        "errors": errors,
        "requests": counts(
            row.request_counts_total, row.request_counts_completed, row.request_counts_failed
        ),
        ERROR: plain(row.last_error),
        "created": moment(row.created_at),
        "endpoint": plain(row.endpoint),
        "model": plain(row.model),
        "metadata": plain(row.metadata),
    }


def cell_style(title: str, text: str) -> str:
    """The colour of a cell that needs a person: OVERDUE, a failed batch or cancel."""
    if title == "overdue" and text:
        return NEEDS_A_PERSON
    if title == "status" and text == BatchStatus.FAILED:
        return "red"
    if title == "cancel" and text.startswith(CancelState.FAILED):
        return "red"
    return ""


@dataclass(frozen=True)
class Layout:
    """The columns a status table shows, those left out, and how wide each is drawn: a
    long listing's later pages are drawn to its first page's (whose header they share),
    a longer cell cut short with an ellipsis, except where LEAVE_OUT never cuts."""

    shown: list[str]
    left_out: list[str]
    widths: dict[str, int]


def status_table(
    rows: list[dict[str, str]], room: int, *, wide: bool = False
) -> tuple[Table, Layout]:
    """The status table for `room` columns, every cell on one line, and its layout: the
    columns left out to fit (see LEAVE_OUT) and how wide each is drawn."""
    from rich.cells import cell_len
    from rich.table import Table

    columns = (*STATUS_COLUMNS[:3], *WIDE_COLUMNS, *STATUS_COLUMNS[3:]) if wide else STATUS_COLUMNS
    natural = {
        title: max(cell_len(text) for text in [title, *(row[title] for row in rows)])
        for title in columns
    }
    needs = {**natural, ERROR: min(natural[ERROR], MIN_ERROR_WIDTH)}
    shown = list(columns)
    left_out: list[str] = []
    for title in (t for t in LEAVE_OUT if t in columns):
        if spanned(needs[t] for t in shown) <= room:
            break
        shown.remove(title)
        left_out.append(title)
    needed = spanned(needs[t] for t in shown)
    # Wider than the room only when just the never-cut columns are left: then the table
    # is as wide as they need, so rich does not squeeze (and cut) them.
    table = Table(box=None, pad_edge=False, width=needed if needed > room else None)
    widths = dict(natural)
    for title in shown:
        if title == ERROR:
            rest = spanned(natural[t] for t in shown if t != ERROR)
            widths[ERROR] = min(natural[ERROR], room - rest - COLUMN_GAP)
            table.add_column(title, no_wrap=True, max_width=room - rest - COLUMN_GAP)
        else:
            table.add_column(title, no_wrap=True)
    _add_rows(table, rows, shown)
    return table, Layout(shown, left_out, widths)


def later_page(rows: list[dict[str, str]], layout: Layout) -> Text:
    """A page after the first, without a header, each column as wide as the first
    page drew it (a never-cut one wider when it must be), to print with soft_wrap: a
    line wider than the terminal runs past its edge, no never-cut cell is cut.

    Drawn here, not by a rich Table, as rich draws its rows (tests/operators/
    test_status_table.py compares the two): a Table cost 330 µs a row, this 17, so
    `--limit 0` over 100,000 batches takes seconds, not half a minute."""
    from rich.cells import cell_len
    from rich.text import Text

    never_cut = set(STATUS_COLUMNS) - set(LEAVE_OUT)
    columns = []
    for title in layout.shown:
        width = layout.widths[title]
        if title in never_cut:
            width = max(width, *(cell_len(row[title]) for row in rows))
        columns.append((title, width))
    page = Text(no_wrap=True, overflow="ignore")
    gap = " " * COLUMN_GAP
    for n, row in enumerate(rows):
        if n:
            page.append("\n")
        for i, (title, width) in enumerate(columns):
            if i:
                page.append(gap)
            text = row[title]
            page.append(fit(text, width), cell_style(title, text) or None)
    return page


def _add_rows(table: Table, rows: list[dict[str, str]], shown: list[str]) -> None:
    from rich.text import Text

    for row in rows:
        # Text, not markup: ids and error texts can hold square brackets.
        table.add_row(*(Text(row[title], style=cell_style(title, row[title])) for title in shown))


def summary_line(page: BatchPage, shown: int | None = None) -> str:
    """Under the table: how many match, per status, and how many were left unshown."""
    if not page.matching:
        return "no batch matches"
    shown = page.shown if shown is None else shown
    per_status = ", ".join(f"{n} {plain(status)}" for status, n in sorted(page.by_status.items()))
    line = f"{page.matching} batch(es) match: {per_status}"
    more = page.matching - shown
    if more:
        line += f"; showing {shown}, {more} more (--limit 0 shows all, or narrow it)"
    return line
