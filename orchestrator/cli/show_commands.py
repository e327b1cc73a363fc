"""`orchestrator show BATCH_ID`: one batch, what a person asks first at the top.

The first lines answer, in order: what state is it in and how old is it (by the
server's `created_at` and the database's clock, not ours), what became of the cancel,
what has been kept (answers, errors), and what happens next. Then the cancel's
attempts, the result files and the history. Every column of every record, the
internals included (`lease_owner`, `version`), only with `--verbose`. `--follow`
redraws it as the batch changes (cli/live.py).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.cli.batch_names import resolve_batch_id
from orchestrator.cli.context import Context, Exit
from orchestrator.cli.live import follow
from orchestrator.cli.render import age, cell, counts_in_words, moment, plain, spanned
from orchestrator.core.cancel_request import CancelState
from orchestrator.core.harvest import HarvestState
from orchestrator.core.status import UNOBSERVED, parse_status
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.pauses import SendingPause
from orchestrator.db.queries import BatchDetail, OperatorQueries
from orchestrator.db.server_clock import database_clock
from orchestrator.errors import ConfigError, UnknownBatch

# Free text in tables wraps, but no narrower than this (else a letter a line).
MIN_FREE_TEXT_WIDTH = 20
ATTEMPT_COLUMNS = ("attempt", "started_at", "http_status", "request_id", "outcome", "error")
FILE_COLUMNS = ("kind", "file_id", "state", "lines", "results", "malformed", "last_error")
EVENT_COLUMNS = ("recorded_at", "kind", "from_status", "to_status", "source", "detail")
VERBOSE_ATTEMPT_COLUMNS = (
    "attempt",
    "worker",
    "started_at",
    "finished_at",
    "http_status",
    "request_id",
    "outcome",
    "error",
)
VERBOSE_FILE_COLUMNS = (
    "kind",
    "file_id",
    "state",
    "lines",
    "results",
    "malformed",
    "duplicates",
    "bytes",
    "sha256",
    "attempts",
    "last_error",
)
VERBOSE_EVENT_COLUMNS = (
    "recorded_at",
    "kind",
    "from_status",
    "to_status",
    "server_at",
    "source",
    "detail",
)
LABEL_WIDTH = 11  # "last error " : the summary's labels line up


def run_show(ctx: Context) -> Exit:
    db = ctx.database()
    try:
        queries = OperatorQueries(db)
        batch_id = resolve_batch_id(
            queries,
            ctx.args.batch_id,
            if_unknown=f"`orchestrator track {ctx.args.batch_id}` to follow it, or "
            "`orchestrator sync` to record every batch the API lists",
        )
        if ctx.args.follow:
            if ctx.json:
                raise ConfigError("--follow draws for a person; scripts poll `show --json`")
            return follow(ctx, lambda: _view(ctx, db, batch_id), ctx.args.interval)
        detail, now, pause = _read(db, batch_id)
    finally:
        db.dispose()
    if ctx.json:
        ctx.emit_json(show_json(detail, now))
    else:
        ctx.out.print(show_view(detail, now, verbose=ctx.args.verbose, pause=pause))
    return Exit.OK


def _read(db: Database, batch_id: str) -> tuple[BatchDetail, datetime, SendingPause | None]:
    now = database_clock(db).now()
    detail = OperatorQueries(db).detail(batch_id)
    if detail is None:  # gone between two reads (deleted by hand, or forgotten)
        raise UnknownBatch(f"batch {batch_id} is not tracked here")
    return detail, now, CancelStore(db).active_pause(now)


def _view(ctx: Context, db: Database, batch_id: str) -> bool:
    """Print one frame of `show --follow`; True when nothing more can happen."""
    detail, now, pause = _read(db, batch_id)
    ctx.out.print(show_view(detail, now, verbose=ctx.args.verbose, pause=pause))
    return _settled(detail)


def _settled(detail: BatchDetail) -> bool:
    """Nothing more will happen: not polled any more, no cancel waiting to be sent."""
    request = request_of(detail)
    pending = request is not None and request["state"] == CancelState.PENDING
    return batch_of(detail)["next_poll_at"] is None and not pending


def seconds_in_status(detail: BatchDetail, now: datetime) -> float:
    since = batch_of(detail)["status_changed_at"] or batch_of(detail)["tracked_at"]
    return max(0.0, float((now - since).total_seconds()))


def show_json(detail: BatchDetail, now: datetime) -> dict[str, Any]:
    return {
        **asdict(detail),
        "seconds_in_status": round(seconds_in_status(detail, now), 3),
        "overdue": batch_of(detail)["overdue_since"] is not None,
    }


def batch_of(detail: BatchDetail) -> dict[str, Any]:
    return detail.batch  # columns by name; what each holds is the model's type


def request_of(detail: BatchDetail) -> dict[str, Any] | None:
    return detail.cancel_request


# --- the view ---------------------------------------------------------------------


def show_view(
    detail: BatchDetail, now: datetime, *, verbose: bool = False, pause: SendingPause | None = None
) -> RenderableType:
    parts: list[RenderableType] = [Text(headline(detail, now)), _summary(detail, now, pause)]
    if verbose:
        parts += [Text(), _fields("batch", detail.batch)]
        if (request := request_of(detail)) is not None:
            parts += [Text(), _fields("cancel request", request)]
    attempts, files, events = (
        (VERBOSE_ATTEMPT_COLUMNS, VERBOSE_FILE_COLUMNS, VERBOSE_EVENT_COLUMNS)
        if verbose
        else (ATTEMPT_COLUMNS, FILE_COLUMNS, EVENT_COLUMNS)
    )
    if detail.attempts:
        parts += [Text(), _Rows("cancel attempts", attempts, detail.attempts)]
    if detail.files:
        parts += [Text(), _Rows("result files", files, detail.files)]
    parts += [Text(), _Rows("history", events, detail.events)]
    return Group(*parts)


def headline(detail: BatchDetail, now: datetime) -> str:
    batch = batch_of(detail)
    line = f"{plain(batch['id'])}: {plain(batch['status'] or UNOBSERVED)}"
    if batch["created_at"] is not None:
        line += f", created {age((now - batch['created_at']).total_seconds())} ago"
    if batch["overdue_since"] is not None:
        line += f", OVERDUE since {moment(batch['overdue_since'])}"
    return line


def _summary(detail: BatchDetail, now: datetime, pause: SendingPause | None) -> Table:
    batch = batch_of(detail)
    rows = {
        "status": _status_words(detail, now),
        "requests": counts_in_words(
            batch["request_counts_total"],
            batch["request_counts_completed"],
            batch["request_counts_failed"],
        ),
        "cancel": _cancel_words(detail, now),
        "results": _results_words(detail),
        "next": _next_words(detail, now, pause),
        "last error": plain(batch["last_error"]),
        "model": " ".join(plain(v) for v in (batch["model"], batch["endpoint"]) if v is not None)
        or plain(None),
        "metadata": plain(batch["metadata"]),
    }
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("label", no_wrap=True, min_width=LABEL_WIDTH - 1)
    table.add_column("value", overflow="fold")
    for label, value in rows.items():
        table.add_row(Text(label), Text(value))
    return table


def _status_words(detail: BatchDetail, now: datetime) -> str:
    batch = batch_of(detail)
    said = f"{plain(batch['status'] or UNOBSERVED)} for {age(seconds_in_status(detail, now))}"
    said += f" (tracked {moment(batch['tracked_at'])} by {plain(batch['tracked_by'])})"
    return said


def _cancel_words(detail: BatchDetail, now: datetime) -> str:
    request = request_of(detail)
    if request is None:
        return "not requested"
    said = plain(request["state"])
    if request["outcome"]:
        said += f": {plain(request['outcome'])}"
    said += f": asked {age((now - request['requested_at']).total_seconds())} ago"
    said += f" by {plain(request['requested_by'])}"
    if request["reason"]:
        said += f" ({plain(request['reason'])})"
    attempts = int(request["attempts"] or 0)
    said += f"; {attempts} attempt" + ("" if attempts == 1 else "s")
    if request["state"] in (CancelState.PENDING, CancelState.FAILED) and request["last_error"]:
        said += f", last: {plain(request['last_error'])}"
    if request["seconds_to_terminal"] is not None:
        said += f"; ended {request['seconds_to_terminal']:.0f}s after the request"
    return said


def _results_words(detail: BatchDetail) -> str:
    answers = detail.results_by_kind.get("output", 0)
    errors = detail.results_by_kind.get("error", 0)
    harvest = batch_of(detail)["harvest_state"]
    if not answers and not errors and harvest in (HarvestState.WAITING, None):
        return "none kept yet"
    said = f"{answers} answer{'' if answers == 1 else 's'}, "
    said += f"{errors} error{'' if errors == 1 else 's'} kept"
    if detail.unreadable_lines:
        n = detail.unreadable_lines
        said += f"; {n} unreadable line{'' if n == 1 else 's'}"
    return f"{said}; harvest {plain(harvest)}"


def _next_words(detail: BatchDetail, now: datetime, pause: SendingPause | None) -> str:
    batch, request = batch_of(detail), request_of(detail)
    steps: list[str] = []
    if request is not None and request["state"] == CancelState.PENDING:
        steps.append(
            f"sending paused until {moment(pause.until)}"
            if pause is not None
            else f"cancel attempt {_when(request['next_attempt_at'], now)}"
        )
    status = parse_status(batch["status"]) if batch["status"] else None
    terminal = status is not None and status.is_terminal
    if batch["next_poll_at"] is not None:
        what = "harvest" if terminal else "poll"
        steps.append(f"{what} {_when(batch['next_poll_at'], now)}")
    elif not steps:
        if terminal and batch["harvest_state"] == HarvestState.DONE:
            steps.append("nothing: finished and harvested")
        elif terminal:
            steps.append(f"nothing: finished, harvest {plain(batch['harvest_state'])}")
        else:
            steps.append("nothing: no longer polled (see last error); `track` it again")
    return "; ".join(steps)


def _when(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "not scheduled"
    seconds = (at - now).total_seconds()
    if seconds <= 0:
        return f"due now (since {age(-seconds)})"
    return f"in {age(seconds)} ({moment(at)})"


# --- tables -----------------------------------------------------------------------


def _fields(title: str, record: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left", box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in record.items():
        table.add_row(name, cell(value))
    return table


class _Rows:
    """A table, a record a row. Every cell but the last column's (free text, which
    wraps) stays on one line, so ids and checksums can be copied whole. When that is
    too wide for the terminal, each record is shown as a list of its fields instead."""

    def __init__(self, title: str, columns: tuple[str, ...], records: list[dict[str, Any]]):
        self.title, self.columns, self.records = title, columns, records

    def __rich_console__(self, console: Console, options: Any) -> Any:
        *whole, free = self.columns
        widths = [max([cell_len(c), *(cell_len(plain(r[c])) for r in self.records)]) for c in whole]
        if spanned([*widths, MIN_FREE_TEXT_WIDTH]) > options.max_width:
            for number, record in enumerate(self.records, 1):
                if number > 1:
                    yield Text()
                fields = {column: record[column] for column in self.columns}
                yield _fields(f"{self.title} ({number} of {len(self.records)})", fields)
            return
        table = Table(title=self.title, title_justify="left", box=None, pad_edge=False)
        for column in whole:
            table.add_column(column, no_wrap=True)
        table.add_column(free, overflow="fold", min_width=MIN_FREE_TEXT_WIDTH)
        for record in self.records:
            table.add_row(*(cell(record[c]) for c in self.columns))
        yield table
