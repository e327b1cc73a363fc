"""`orchestrator status` (a table of batches) and `orchestrator show BATCH_ID` (one in full)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.live import follow
from orchestrator.cli.output import row_limit
from orchestrator.cli.render import COLUMN_GAP, age, counts, moment, plain, spanned
from orchestrator.cli.selection import NEVER_SYNCED, Selector, selector_of
from orchestrator.core.cancel_state import CancelState
from orchestrator.core.status import UNOBSERVED, BatchStatus
from orchestrator.db.pause_state import SendingPause
from orchestrator.db.sqlite_reader import ReaderFailed, SqliteReader
from orchestrator.db.summaries import BatchPage, BatchSummary, StatusRead, read_status
from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Table

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
    read, now = read_once(ctx, selector)
    page, pause, synced = read.page, read.pause, read.synced
    fmt = ctx.output_format
    if fmt == "json":
        ctx.emit_json(status_json(page, now, pause))
    elif fmt == "jsonl":
        for row in page.rows:
            ctx.emit_json_line(batch_record(row, now))
    elif fmt == "ids":
        ctx.emit_lines(row.id for row in page.rows)
    elif not page.rows and pause is None:  # nothing to draw: one line, rich not imported
        ctx.emit_lines([summary_line(page)])
        if not page.matching and not selector.is_empty and synced is None:
            ctx.err.print(NEVER_SYNCED, markup=False)
    else:
        print_status(ctx, page, now, pause, wide=fmt == "wide")
        if not page.matching and not selector.is_empty and synced is None:
            ctx.err.print(NEVER_SYNCED, markup=False)
    return Exit.OK


def read_once(ctx: Context, selector: Selector) -> tuple[StatusRead, datetime]:
    """What status shows, and the database's now. On a plain SQLite file it is read
    through sqlite3 alone: importing SQLAlchemy would take most of status's time. Else,
    or when that reader cannot answer, through the database layer, as every command."""
    reader = SqliteReader.open(ctx.settings.database_url)
    if reader is not None:
        try:
            now = reader.now()
            return read_status(
                reader, selector.batch_filter(now), now, limit=row_limit(ctx.args)
            ), now
        except ReaderFailed:
            pass  # read again below, where a problem is reported as every command reports it
        finally:
            reader.close()
    from orchestrator.db.server_clock import database_clock  # SQLAlchemy: only here

    db = ctx.database()
    try:
        now = database_clock(db).now()
        return read_status(db, selector.batch_filter(now), now, limit=row_limit(ctx.args)), now
    finally:
        db.dispose()


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
        **asdict(row),
        "status": row.status or UNOBSERVED,
        "overdue": row.overdue,
        "age_seconds": round(row.seconds_since_created(now), 3),
        "seconds_in_status": round(row.seconds_in_status(now), 3),
    }


def status_json(page: BatchPage, now: datetime, pause: SendingPause | None) -> dict[str, Any]:
    return {
        "batches": [batch_record(row, now) for row in page.rows],
        "shown": len(page.rows),
        "matching": page.matching,
        "more": page.matching - len(page.rows),
        "by_status": page.by_status,
        "paused": None if pause is None else {"until": pause.until, "reason": pause.reason},
    }


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
    if page.rows:
        cells = [status_cells(row, now) for row in page.rows]
        table, left_out = status_table(cells, ctx.out.width, wide=wide)
        # crop=False: when even the never-cut columns are wider than the terminal, their
        # lines run past its edge (it wraps them) rather than lose the end of an id.
        ctx.out.print(table, crop=False)
        if left_out:
            ctx.out.print(
                f"too narrow to show: {', '.join(left_out)} (widen the terminal or use -o json)",
                markup=False,
            )
    ctx.out.print(summary_line(page), markup=False)


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


def status_table(
    rows: list[dict[str, str]], room: int, *, wide: bool = False
) -> tuple[Table, list[str]]:
    """The status table for `room` columns, every cell on one line; and the columns
    left out to fit (see LEAVE_OUT)."""
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

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
    for title in shown:
        if title == ERROR:
            rest = spanned(natural[t] for t in shown if t != ERROR)
            table.add_column(title, no_wrap=True, max_width=room - rest - COLUMN_GAP)
        else:
            table.add_column(title, no_wrap=True)
    for row in rows:
        # Text, not markup: ids and error texts can hold square brackets.
        table.add_row(*(Text(row[title], style=cell_style(title, row[title])) for title in shown))
    return table, left_out


def summary_line(page: BatchPage) -> str:
    if not page.matching:
        return "no batch matches"
    per_status = ", ".join(f"{n} {plain(status)}" for status, n in sorted(page.by_status.items()))
    line = f"{page.matching} batch(es) match: {per_status}"
    more = page.matching - len(page.rows)
    if more:
        line += f"; showing {len(page.rows)}, {more} more (--limit 0 shows all, or narrow it)"
    return line
