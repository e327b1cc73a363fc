"""`orchestrator reconcile [--once]`: poll batches to the end and store every result."""

from __future__ import annotations

import logging
import signal

from rich.table import Table

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.render import cell
from orchestrator.cli.upkeep_wiring import build_upkeep
from orchestrator.cli.wiring import build_client, presence, shared_budget
from orchestrator.core.harvest import FileState
from orchestrator.db.server_clock import database_clock
from orchestrator.metrics import start_process_metrics
from orchestrator.probes import Heartbeat
from orchestrator.processes.heap import settle_start_up_heap
from orchestrator.processes.identity import process_id
from orchestrator.processes.reconciler import PassSummary, Reconciler
from orchestrator.processes.stopping import stop_on_signals

log = logging.getLogger(__name__)


def run_reconcile(ctx: Context) -> Exit:
    db = ctx.database()
    clock = database_clock(db)  # the server's: leases and due times are compared across hosts
    # This process's own clock: it compares the loop's turns with each other, nothing
    # across hosts, and /healthz must answer at once even when the database does not.
    heartbeat = Heartbeat(stale_seconds=ctx.settings.health_stale_seconds)
    metrics, _ = start_process_metrics(ctx.settings, db, heartbeat=heartbeat, process="reconciler")
    budget = shared_budget(ctx.settings, db)  # one for every process on this database
    client = build_client(ctx.settings, transport=metrics.transport(), clock=clock, budget=budget)
    upkeep = build_upkeep(ctx.settings, db, client, heartbeat)
    owner = process_id("reconciler")
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop = stop_on_signals(client.abort)
    try:
        with (
            presence(ctx.settings, db, owner, "reconciler", clock),
            Reconciler(
                db,
                client,
                ctx.settings,
                clock,
                owner,
                stop=stop,
                heartbeat=heartbeat,
                metrics=metrics,
                upkeep=upkeep,
            ) as reconciler,
        ):
            settle_start_up_heap()
            log.info(
                "reconciler %s started (concurrency %d)",
                owner,
                reconciler.config.concurrency,
                extra={"action": "reconciler_started"},
            )
            summary = reconciler.run(once=ctx.args.once)
            summary.stopped = stop.is_set()
            reconciler.check_attention(summary)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        client.close()
        db.dispose()
    report(ctx, owner, summary, once=ctx.args.once)
    if ctx.args.once and summary.needs_attention:
        return Exit.ATTENTION
    return Exit.OK


def describe(summary: PassSummary) -> str:
    text = (
        f"{summary.claimed} batch(es) claimed, {summary.polled} polled "
        f"({summary.poll_failures} poll failure(s)), {summary.became_terminal} became terminal, "
        f"{summary.harvested} harvested: {summary.results_stored:,} result(s) stored, "
        f"{summary.duplicates} duplicate(s) skipped, {summary.line_errors} unreadable line(s)"
    )
    left_out = summary.left_out
    if summary.cancels_closed:
        outcomes = ", ".join(f"{b} {o}" for b, o in sorted(summary.cancels_closed.items()))
        text += f"; cancels closed: {outcomes}{_more(left_out['cancels_closed'])}"
    if summary.unknown:
        text += (
            f"; stopped polling {len(summary.unknown) + left_out['unknown']} batch(es) the "
            f"API has never shown (still 404 after an hour; `orchestrator track ID` resumes): "
            f"{', '.join(sorted(summary.unknown))}{_more(left_out['unknown'])}"
        )
    dropped = sum(left_out.values())
    if dropped:  # a long-running process's total keeps the most recent of each list
        text += (
            f"; the report's lists keep the most recent {summary.keep} entries each: "
            f"{dropped} older left out (`left_out`)"
        )
    if summary.released or summary.lost_leases:
        text += f"; {summary.released} lease(s) released, {summary.lost_leases} lost"
    if summary.db_outages:
        text += f"; rode out {summary.db_outages} database outage(s)"
    return text


def _more(left_out: int) -> str:
    return f" and {left_out} earlier (not listed)" if left_out else ""


def report(ctx: Context, owner: str, summary: PassSummary, *, once: bool) -> None:
    if ctx.json:
        ctx.emit_json({"owner": owner, **summary.to_dict()})
        return
    how = "pass done" if once else "stopped"
    if once and summary.stopped:
        how = "pass interrupted"
    ctx.summary(f"reconciler {owner} {how}: {describe(summary)}", report=summary.to_dict())
    if summary.auth_error:
        ctx.summary(
            f"the API refused the key: {summary.auth_error}; check OPENAI_API_KEY "
            "(and OPENAI_ORG_ID / OPENAI_PROJECT_ID)",
            level=logging.ERROR,
        )
    attention = summary.attention
    if attention is None or not (attention.overdue or attention.files):
        return
    if ctx.settings.log_format == "json":
        return  # the "needs a person" items are in the report above
    table = Table(title="needs a person", box=None, title_justify="left")
    for title in ("batch", "what", "since / file", "detail"):
        table.add_column(title, overflow="fold")
    for batch_id, status, since in attention.overdue:
        table.add_row(cell(batch_id), f"overdue in {cell(status)}", cell(since), "still polling")
    for batch_id, file_id, state, error in attention.files:
        what = "file missing" if state == FileState.MISSING else "file not harvested yet"
        table.add_row(cell(batch_id), what, cell(file_id), cell(error))
    ctx.err.print(table)
