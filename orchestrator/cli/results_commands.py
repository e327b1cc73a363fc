"""`orchestrator results BATCH_ID`: export the stored results as JSON lines or CSV, streaming."""

from __future__ import annotations

import contextlib
import csv
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO

import orjson

from orchestrator.cli.batch_names import resolve_batch_id
from orchestrator.cli.context import Context, Exit
from orchestrator.db.queries import BatchSummary, OperatorQueries, ResultRow
from orchestrator.errors import ConfigError, UnknownBatch

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


def run_results(ctx: Context) -> Exit:
    db = ctx.database()
    try:
        queries = OperatorQueries(db)
        batch_id = resolve_batch_id(queries, ctx.args.batch_id, if_unknown="nothing to export")
        batch = queries.summaries([batch_id]).get(batch_id)
        if batch is None:
            raise UnknownBatch(f"batch {batch_id} is not tracked here: nothing to export")
        if ctx.args.complete_only and batch.harvest_state != "done":
            _warn_if_partial(ctx, batch)
            ctx.err.print("--complete-only: nothing exported", markup=False)
            return Exit.ATTENTION
        rows = queries.iter_results(batch_id, kind=ctx.args.kind)
        with _destination(ctx.args.output) as out:
            written = write_rows(out, rows, ctx.args.format)
        pruned = queries.batches([batch_id])[batch_id].results_pruned_at
    finally:
        db.dispose()
    where = ctx.args.output or "stdout"
    ctx.err.print(f"exported {written} result(s) of {batch_id} to {where}", markup=False)
    if pruned is not None:
        ctx.err.print(
            f"note: `orchestrator prune` removed the results of {batch_id} on "
            f"{pruned:%Y-%m-%d %H:%M}Z (see its --archive file, if one was written)",
            markup=False,
        )
    _warn_if_partial(ctx, batch)
    return Exit.OK


def _warn_if_partial(ctx: Context, batch: BatchSummary) -> None:
    if batch.harvest_state == "done":
        return
    expected = batch.request_counts_total
    ctx.err.print(
        f"note: {batch.id} is {batch.status or 'not yet observed'} and its harvest is "
        f"{batch.harvest_state}: this is what is stored so far"
        + (f" ({batch.results_stored} of {expected} requests)" if expected is not None else ""),
        markup=False,
    )


@contextlib.contextmanager
def _destination(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a file that takes its name only once written in full."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(partial, target)
    except OSError as exc:
        raise ConfigError(f"--output {path}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)


def write_rows(out: IO[str], rows: Iterable[ResultRow], fmt: str) -> int:
    written = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            record = asdict(row)
            body = record["body"]
            record["body"] = orjson.dumps(body).decode() if body is not None else ""
            writer.writerow(["" if record[c] is None else record[c] for c in CSV_COLUMNS])
            written += 1
        return written
    for row in rows:
        out.write(orjson.dumps(asdict(row)).decode())
        out.write("\n")
        written += 1
    return written
