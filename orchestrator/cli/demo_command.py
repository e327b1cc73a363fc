"""`orchestrator demo`: the whole job end to end, on embedded defaults, in well under a minute."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

from rich.live import Live
from rich.table import Table

from orchestrator.cli.context import Context, Exit
from orchestrator.demo import PLAN, Outcome, Progress, check_demo_database_path, run_demo


def progress_table(p: Progress, elapsed: float) -> Table:
    table = Table(title=f"orchestrator demo: {elapsed:4.1f}s", title_justify="left")
    for column in (
        "batches",
        "by status",
        "cancels open",
        "cancels settled",
        "harvested",
        "results recorded",
    ):
        table.add_column(column)
    statuses = ", ".join(f"{s} {n}" for s, n in sorted(p.by_status.items()))
    table.add_row(
        str(p.batches),
        statuses,
        str(p.cancels_open),
        str(p.cancels_closed),
        f"{p.harvested}/{p.batches}",
        str(p.results),
    )
    return table


def summary_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="per batch", title_justify="left")
    for column in ("batch", "created as", "status", "cancel", "answers kept", "lines", "to end"):
        table.add_column(column, no_wrap=True)
    for o in outcomes:
        seconds = "" if o.seconds_to_terminal is None else f"{o.seconds_to_terminal:.0f}s"
        requests = "?" if o.requests is None else str(o.requests)
        table.add_row(
            o.batch_id[:14] + "…",
            o.label,
            o.status or "?",
            o.cancel or "",
            str(o.outputs),
            f"{o.results}/{requests}",
            seconds,
        )
    return table


def how_i_was_run() -> str:
    """What the user can type next: `orchestrator` if that is on PATH, else the path used."""
    used = sys.argv[0]
    if used.endswith("__main__.py"):
        return "python -m orchestrator"
    on_path = shutil.which("orchestrator")
    if on_path and Path(on_path).resolve() == Path(used).resolve():
        return "orchestrator"
    return used


def run(ctx: Context) -> Exit:
    database: Path = ctx.args.database.resolve()
    check_demo_database_path(database)  # refuse before printing or starting anything
    started = time.monotonic()
    quiet = logging.getLogger("orchestrator")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the live view tells the story
    try:
        if ctx.json:
            outcomes, final, url = run_demo(database, on_progress=lambda _p: None)
        else:
            total = sum(count for _, count, *_ in PLAN)
            ctx.err.print(f"Creating {total} batches in a local simulator and cancelling them all…")
            with Live(console=ctx.err, refresh_per_second=4) as live:
                outcomes, final, url = run_demo(
                    database,
                    on_progress=lambda p: live.update(
                        progress_table(p, time.monotonic() - started)
                    ),
                )
    finally:
        quiet.setLevel(level)  # one process may run more than one command (tests do)
    elapsed = time.monotonic() - started
    console = f"{how_i_was_run()} console --database-url {url}"
    if ctx.json:
        ctx.emit_json(
            {
                "database_url": url,
                "console_command": console,
                "seconds": round(elapsed, 1),
                "finished": final.finished,
                "results_recorded": final.results,
                "batches": [vars(o) for o in outcomes],
            }
        )
        return Exit.OK if final.finished else Exit.ATTENTION
    ctx.out.print(summary_table(outcomes))
    ctx.out.print(
        "answers kept: output-file lines recorded (the paid-for results); lines: every "
        "recorded line, errors and batch_cancelled ones included, of the batch's requests"
    )
    verdict = (
        "every cancel settled and every result file harvested"
        if final.finished
        else ("stopped at the time limit with work left (see `orchestrator status`)")
    )
    ctx.out.print(f"\n{verdict}: {final.results} results recorded in {elapsed:.1f}s.")
    me = how_i_was_run()
    ctx.out.print("\nNext, look at what was recorded:")
    ctx.out.print(f"  export ORCHESTRATOR_DATABASE_URL={url}")
    ctx.out.print(f"  {me} status             # every batch, its cancel and its results")
    ctx.out.print(f"  {me} show BATCH_ID      # one batch: timestamps, attempts, history")
    ctx.out.print(f"  {me} results BATCH_ID   # the recorded result lines")
    ctx.out.print(f'  sqlite3 {database} "SELECT status, count(*) FROM batches GROUP BY status"')
    ctx.out.print("\nOr look in a browser (read-only; Ctrl-C stops it):")
    ctx.out.print(f"  {console}", soft_wrap=True)
    return Exit.OK if final.finished else Exit.ATTENTION
