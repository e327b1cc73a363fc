"""`orchestrator worker`: the long-running cancel sender."""

from __future__ import annotations

import logging
import threading

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.wiring import build_async_client, presence, shared_budget
from orchestrator.core.visible import visible
from orchestrator.db.cancels import CancelStore
from orchestrator.db.server_clock import database_clock, never_waiting
from orchestrator.metrics import start_process_metrics
from orchestrator.probes import Heartbeat
from orchestrator.processes.heap import settle_start_up_heap
from orchestrator.processes.identity import process_id
from orchestrator.processes.stopping import stop_on_signals
from orchestrator.processes.worker import CancelWorker

log = logging.getLogger(__name__)


def run_worker(ctx: Context) -> Exit:
    db = ctx.database()
    clock = database_clock(db)  # the server's: leases and due times are compared across hosts
    # This process's own clock: it compares the loop's turns with each other, nothing
    # across hosts, and /healthz must answer at once even when the database does not.
    heartbeat = Heartbeat(stale_seconds=ctx.settings.health_stale_seconds)
    metrics, _ = start_process_metrics(ctx.settings, db, heartbeat=heartbeat, process="worker")
    budget = shared_budget(ctx.settings, db)  # one for every process on this database
    # its clock is read on the sender's event loop, which must not wait on the database
    client = build_async_client(
        ctx.settings, wrap=metrics.metered, clock=never_waiting(clock), budget=budget
    )
    owner = process_id("worker")
    stop = stop_on_signals(client.abort) if not ctx.args.once else threading.Event()
    worker = CancelWorker(
        CancelStore(db, stale_seconds=ctx.settings.process_stale_seconds),
        client,
        ctx.settings,
        clock,
        owner,
        stop=stop,
        heartbeat=heartbeat,
    )
    settle_start_up_heap()
    log.info("worker %s started (concurrency %d)", owner, ctx.settings.worker_concurrency)
    try:
        with presence(ctx.settings, db, owner, "worker", clock):
            report = worker.run(once=ctx.args.once)  # closes the client's connections
    finally:
        db.dispose()
    if ctx.json:
        ctx.emit_json(report.to_dict())
    else:
        ctx.summary(f"worker {owner} stopped: {report.summary()}", report=report.to_dict())
    if ctx.args.once and (report.paused or report.failed):
        return Exit.ATTENTION  # a script should look: a key to fix, an id that is wrong
    return Exit.OK


def run_resume(ctx: Context) -> Exit:
    db = ctx.database()
    try:
        pause, due = CancelStore(db).resume(now=database_clock(db).now())
    finally:
        db.dispose()
    if ctx.json:
        reason = None if pause is None else pause.reason
        ctx.emit_json({"was_paused": pause is not None, "reason": reason, "made_due": due})
    elif pause is None:
        ctx.err.print(f"sending was not paused; {due} cancel(s) held back by a 401/403 are due now")
    else:
        ctx.err.print(
            f"sending resumed (it was paused: {visible(pause.reason)}); "
            f"{due} cancel(s) held back by the pause are due now",
            markup=False,
        )
    return Exit.OK
