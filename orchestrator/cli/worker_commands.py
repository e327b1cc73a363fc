"""`orchestrator worker`: the long-running cancel sender."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import threading

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.wiring import build_client, retry_policy
from orchestrator.clock import SystemClock, utcnow
from orchestrator.db.cancels import CancelStore
from orchestrator.metrics import add_metrics_port_argument, start_process_metrics
from orchestrator.probes import Heartbeat
from orchestrator.processes.identity import process_id
from orchestrator.processes.stopping import stop_on_signals
from orchestrator.processes.worker import CancelWorker, WorkerConfig

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser(
        "worker",
        help="send the requested cancels (long-running, or --once)",
        description=(
            "Lease due cancel requests from the database and send POST /batches/{id}/cancel, "
            "many at once, recording every attempt. Safe to run many of, on many machines, "
            "against one PostgreSQL database. SIGTERM/SIGINT: finish in-flight sends, release "
            "the rest, exit 0. A 401/403 pauses all sending (every worker) until the pause "
            "runs out or `orchestrator resume`."
        ),
    )
    worker.add_argument(
        "--once",
        action="store_true",
        help="send what is due now, then exit (1 if sending is paused or a cancel failed "
        "for good, e.g. an unknown batch)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        dest="setting_worker_concurrency",
        metavar="N",
        help="cancels in flight at once (env ORCHESTRATOR_WORKER_CONCURRENCY, default 16)",
    )
    add_metrics_port_argument(worker)
    worker.add_argument("--json", action="store_true", help="print the final report as JSON")
    worker.set_defaults(handler=run_worker)

    resume = commands.add_parser(
        "resume",
        help="lift the pause on sending that a 401/403 set",
        description=(
            "After a 401/403 every worker stops sending cancels for a while "
            "(ORCHESTRATOR_WORKER_AUTH_PAUSE_SECONDS). Once the key, organization or project "
            "is fixed (`orchestrator healthcheck --api` checks), lift the pause: the cancels "
            "it held back are due at once, and running workers carry on within a second."
        ),
    )
    resume.add_argument("--json", action="store_true", help="machine-readable output")
    resume.set_defaults(handler=run_resume)


def worker_config(ctx: Context) -> WorkerConfig:
    s = ctx.settings
    return WorkerConfig(
        concurrency=s.worker_concurrency,
        lease_seconds=s.worker_lease_seconds,
        heartbeat_seconds=s.worker_heartbeat_seconds,
        idle_seconds=s.worker_idle_seconds,
        auth_pause_seconds=s.worker_auth_pause_seconds,
    )


def run_worker(ctx: Context) -> Exit:
    db = ctx.database()
    clock = SystemClock()
    heartbeat = Heartbeat(clock, stale_seconds=ctx.settings.health_stale_seconds)
    metrics, _ = start_process_metrics(ctx.settings, db, heartbeat=heartbeat, process="worker")
    client = build_client(ctx.settings, transport=metrics.transport())
    owner = process_id("worker")
    stop = stop_on_signals() if not ctx.args.once else threading.Event()
    worker = CancelWorker(
        CancelStore(db),
        client,
        config=worker_config(ctx),
        policy=retry_policy(ctx.settings),
        clock=clock,
        owner=owner,
        heartbeat=heartbeat,
    )
    log.info("worker %s started (concurrency %d)", owner, ctx.settings.worker_concurrency)
    try:
        report = worker.run(stop, once=ctx.args.once)
    finally:
        client.close()
        db.dispose()
    if ctx.json:
        ctx.emit_json(dataclasses.asdict(report))
    else:
        ctx.summary(
            f"worker {owner} stopped: {report.summary()}", report=dataclasses.asdict(report)
        )
    if ctx.args.once and (report.paused or report.failed):
        return Exit.ATTENTION  # a script should look: a key to fix, an id that is wrong
    return Exit.OK


def run_resume(ctx: Context) -> Exit:
    db = ctx.database()
    try:
        pause, due = CancelStore(db).resume(now=utcnow())
    finally:
        db.dispose()
    if ctx.json:
        reason = None if pause is None else pause.reason
        ctx.emit_json({"was_paused": pause is not None, "reason": reason, "made_due": due})
    elif pause is None:
        ctx.err.print(f"sending was not paused; {due} cancel(s) held back by a 401/403 are due now")
    else:
        ctx.err.print(
            f"sending resumed (it was paused: {pause.reason}); "
            f"{due} cancel(s) held back by the pause are due now",
            markup=False,
        )
    return Exit.OK
