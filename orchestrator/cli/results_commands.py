"""`orchestrator results BATCH_ID`: export the stored results, streaming.

`-o jsonl` (the default), `json`, `csv` (made safe for spreadsheets) or `table` (for a
person): cli/result_writers.py. `--to FILE` is made safe too: written to a new file of
a random name in FILE's directory (created exclusively, links not followed), renamed
over FILE only once complete. An existing FILE is replaced only with --force; a FILE
that is not a regular file (a link, a directory, a device, a FIFO) never is.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from orchestrator.cli.batch_names import resolve_batch_id
from orchestrator.cli.context import PIPED_WIDTH, Context, Exit
from orchestrator.cli.output import fields_of, row_limit
from orchestrator.cli.result_writers import (
    CSV_COLUMNS,
    TABLE_COLUMNS,
    write_records,
    write_table,
)
from orchestrator.cli.selection import NEVER_SYNCED, Selector, selector_of
from orchestrator.core.harvest import HarvestState
from orchestrator.core.visible import visible
from orchestrator.db.queries import BatchSummary, OperatorQueries
from orchestrator.db.server_clock import database_clock
from orchestrator.errors import ConfigError, UnknownBatch


def run_results(ctx: Context) -> Exit:
    selector = selector_of(ctx.args)
    if ctx.args.batch_id is not None and not selector.is_empty:
        raise ConfigError("name one batch, or select batches with flags: not both")
    if ctx.args.batch_id is None:
        if selector.is_empty:
            raise ConfigError("name a batch (BATCH_ID), or select batches (--status, ...)")
        return _run_selected(ctx, selector)
    db = ctx.database()
    try:
        queries = OperatorQueries(db)
        batch_id = resolve_batch_id(queries, ctx.args.batch_id, if_unknown="nothing to export")
        batch = queries.summaries([batch_id]).get(batch_id)
        if batch is None:
            raise UnknownBatch(f"batch {batch_id} is not tracked here: nothing to export")
        if ctx.args.complete_only and batch.harvest_state != HarvestState.DONE:
            _warn_if_partial(ctx, batch)
            ctx.err.print("--complete-only: nothing exported", markup=False)
            return Exit.ATTENTION
        rows = queries.iter_results(batch_id, kind=ctx.args.kind)
        written = _export(ctx, (fields_of(row) for row in rows), ())
        pruned = queries.batches([batch_id])[batch_id].results_pruned_at
    finally:
        db.dispose()
    ctx.err.print(f"{written} of {batch_id} {_where(ctx)}", markup=False)
    if pruned is not None:
        _note_pruned(ctx, batch_id, pruned)
    _warn_if_partial(ctx, batch)
    return Exit.OK


def _run_selected(ctx: Context, selector: Selector) -> Exit:
    """Every result of every batch the selector chooses, oldest batch first."""
    db = ctx.database()
    try:
        queries = OperatorQueries(db)
        chosen = queries.select_batches(selector.batch_filter(database_clock(db).now()))
        if not chosen and queries.last_synced() is None:
            ctx.err.print(NEVER_SYNCED, markup=False)
        partial = [b for b in chosen if b.harvest_state != HarvestState.DONE]
        if ctx.args.complete_only and partial:
            for batch in partial:
                _warn_if_partial(ctx, batch)
            ctx.err.print("--complete-only: nothing exported", markup=False)
            return Exit.ATTENTION
        records = (
            {"batch_id": batch.id, **fields_of(row)}
            for batch in chosen
            for row in queries.iter_results(batch.id, kind=ctx.args.kind)
        )
        written = _export(ctx, records, ("batch_id",))
        # read after the export, as for one batch: a prune while it ran is noted too
        stored = queries.batches(batch.id for batch in chosen)
    finally:
        db.dispose()
    ctx.err.print(f"{written} of {len(chosen)} batch(es) {_where(ctx)}", markup=False)
    for batch in chosen:
        pruned = stored[batch.id].results_pruned_at if batch.id in stored else None
        if pruned is not None:
            _note_pruned(ctx, batch.id, pruned)
    for batch in partial:
        _warn_if_partial(ctx, batch)
    if not chosen:
        ctx.err.print(f"no batch matches {selector.describe()}", markup=False)
    return Exit.OK


def _export(ctx: Context, records: Iterable[dict[str, Any]], lead: tuple[str, ...]) -> str:
    """Write `records` in the format asked for, to stdout or --to; what was written,
    in words (`exported 5 result(s)`, `showed 50 result(s)`)."""
    fmt = ctx.output_format
    limit = row_limit(ctx.args)  # None in the machine formats unless --limit is given
    with _destination(ctx.args.to, force=ctx.args.force) as out:
        if fmt == "table":
            console = ctx.out if out is sys.stdout else _file_console(out)
            shown, more = write_table(console, records, (*lead, *TABLE_COLUMNS), limit)
            if more:
                ctx.err.print("there are more: --limit 0 shows all, -o jsonl exports all")
            return f"showed {shown} result(s)"
        if limit is not None:
            records = _first(records, limit)
        written = write_records(out, records, fmt, (*lead, *CSV_COLUMNS))
    return f"exported {written} result(s)"


def _first(records: Iterable[dict[str, Any]], count: int) -> Iterator[dict[str, Any]]:
    for n, record in enumerate(records):
        if n >= count:
            return
        yield record


def _file_console(out: IO[str]) -> Console:
    return Console(file=out, width=PIPED_WIDTH, color_system=None, highlight=False)


def _where(ctx: Context) -> str:
    return "to stdout" if ctx.args.to in (None, "-") else f"to {visible(ctx.args.to)}"


def _note_pruned(ctx: Context, batch_id: str, pruned: datetime) -> None:
    """Its rows are gone: 0 exported of a `done` harvest is not what it had."""
    ctx.err.print(
        f"note: `orchestrator prune` removed the results of {batch_id} on "
        f"{pruned:%Y-%m-%d %H:%M}Z (see its --archive file, if one was written)",
        markup=False,
    )


def _warn_if_partial(ctx: Context, batch: BatchSummary) -> None:
    if batch.harvest_state == HarvestState.DONE:
        return
    expected = batch.request_counts_total
    ctx.err.print(
        f"note: {batch.id} is {visible(batch.status or 'not yet observed')} and its harvest is "
        f"{batch.harvest_state}: this is what is stored so far"
        + (f" ({batch.results_stored} of {expected} requests)" if expected is not None else ""),
        markup=False,
    )


def _refuse_to_replace(target: Path, *, force: bool) -> None:
    """ConfigError (exit 2) naming `target` unless it is absent, or a regular file and
    `force`. lstat: a link is judged as a link, never followed."""
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"--to {visible(str(target))}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        if stat.S_ISDIR(mode):
            kind = "a directory"
        raise ConfigError(
            f"--to {visible(str(target))} is {kind}: refusing to replace it "
            "(even with --force); name a regular file"
        )
    if not force:
        raise ConfigError(f"--to {visible(str(target))} already exists: use --force to replace it")


@contextlib.contextmanager
def _destination(path: str | None, *, force: bool = False) -> Iterator[IO[str]]:
    """stdout, or a file that takes its name only once written in full."""
    if path is None or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    _refuse_to_replace(target, force=force)  # before the export, which may take a while
    try:
        # O_CREAT|O_EXCL|O_NOFOLLOW under a random name: nothing planted at a name we
        # could guess is ever followed or written through.
        fd, partial_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
        )
    except OSError as exc:
        raise ConfigError(f"--to {visible(path)}: {exc.strerror or exc}") from None
    partial = Path(partial_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # the mode `open` would give, not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _publish(partial, target, force=force)
    except OSError as exc:
        raise ConfigError(f"--to {visible(path)}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)


def _publish(partial: Path, target: Path, *, force: bool) -> None:
    """Give the complete file its name. Without --force a hard link does it: atomic,
    and it fails if FILE appeared while we wrote, so a file is never replaced."""
    if not force:
        try:
            os.link(partial, target, follow_symlinks=False)
            return
        except OSError:  # it exists now (refused below, naming it), or no hard links here
            pass
    _refuse_to_replace(target, force=force)
    os.replace(partial, target)
