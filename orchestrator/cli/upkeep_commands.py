"""`orchestrator cleanup` and `orchestrator prune`: the jobs of a fleet that runs for months."""

from __future__ import annotations

import dataclasses
import sys
from datetime import timedelta
from pathlib import Path

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.upkeep_wiring import file_cleanup
from orchestrator.cli.wiring import build_client
from orchestrator.core.visible import visible
from orchestrator.db.file_deletions import FileDeletionStore
from orchestrator.db.retention import RetentionStore
from orchestrator.errors import ConfigError
from orchestrator.processes.retention import Pruner

PREVIEW_LIMIT = 1000


def run_cleanup(ctx: Context) -> Exit:
    settings = ctx.settings
    if ctx.args.input_files:
        settings = settings.replace(cleanup_input_files=True)
    db = ctx.database()
    try:
        if ctx.args.dry_run:
            store = FileDeletionStore(
                db, result_files=True, input_files=settings.cleanup_input_files
            )
            plan = store.preview(limit=PREVIEW_LIMIT)
            if ctx.json:
                ctx.emit_json({"would_delete": [dataclasses.asdict(d) for d in plan]})
            else:
                for d in plan:  # tab-separated, for cut and awk
                    shown = (visible(d.file_id), d.kind, visible(d.batch_id))  # server's ids
                    sys.stdout.write("\t".join(shown) + "\n")
                ctx.err.print(f"{len(plan)} file(s) would be deleted (dry run)")
            return Exit.OK
        client = build_client(settings)
        try:
            cleanup = file_cleanup(settings.replace(cleanup_result_files=True), db, client)
            result = cleanup.run_once()
        finally:
            client.close()
    finally:
        db.dispose()
    if ctx.json:
        ctx.emit_json(dataclasses.asdict(result))
    else:
        ctx.summary(f"cleanup: {result.summary()}", report=dataclasses.asdict(result))
        for line in result.failed:
            ctx.err.print(f"  refused: {visible(line)}", markup=False)
    return Exit.ATTENTION if result.failed or result.auth_error else Exit.OK


def _age(ctx: Context) -> timedelta:
    if ctx.args.older_than is not None:
        age: timedelta = ctx.args.older_than
    elif ctx.settings.retention_days is not None:
        age = timedelta(days=ctx.settings.retention_days)
    else:
        raise ConfigError("prune: say how old with --older-than (e.g. 30d)")
    if age <= timedelta(0):
        raise ConfigError(f"--older-than must be more than 0, got {ctx.args.older_than}")
    return age


def run_prune(ctx: Context) -> Exit:
    age = _age(ctx)
    archive: Path | None = ctx.args.archive
    if archive is not None and ctx.args.dry_run:
        raise ConfigError("--archive writes nothing with --dry-run: leave one of them out")
    db = ctx.database()
    try:
        pruner = Pruner(RetentionStore(db))
        plan = pruner.plan(age)
        done = None if ctx.args.dry_run else pruner.prune(plan, archive=archive)
    finally:
        db.dispose()
    counts = plan.counts if done is None else done
    if ctx.json:
        ctx.emit_json(
            {
                "dry_run": done is None,
                "cutoff": plan.cutoff,
                "archive": str(archive) if archive is not None else None,
                **dataclasses.asdict(counts),
            }
        )
        return Exit.OK
    verb = "would remove" if done is None else "removed"
    text = (
        f"prune {verb} {counts.results:,} result(s), {counts.line_errors:,} unreadable "
        f"line(s) and {counts.events:,} event(s) of {counts.batches:,} batch(es) that ended "
        f"before {plan.cutoff:%Y-%m-%d %H:%M:%S}Z, and {counts.webhook_events:,} webhook "
        "delivery record(s) received before it"
    )
    if archive is not None:
        text += f"; archived to {archive}"
    ctx.summary(text, report=dataclasses.asdict(counts))
    return Exit.OK
