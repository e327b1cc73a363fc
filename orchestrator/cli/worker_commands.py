"""`orchestrator worker`: the long-running cancel sender."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import threading

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.wiring import build_client, retry_policy
from orchestrator.clock import SystemClock
from orchestrator.db.cancels import CancelStore
from orchestrator.metrics import add_metrics_port_argument, start_process_metrics
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
            "the rest, exit 0."
        ),
    )
    worker.add_argument("--once", action="store_true", help="send what is due now, then exit")
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
    metrics, _ = start_process_metrics(ctx.settings, db)
    client = build_client(ctx.settings, transport=metrics.transport())
    owner = process_id("worker")
    stop = stop_on_signals() if not ctx.args.once else threading.Event()
    worker = CancelWorker(
        CancelStore(db),
        client,
        config=worker_config(ctx),
        policy=retry_policy(ctx.settings),
        clock=SystemClock(),
        owner=owner,
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
        ctx.err.print(f"worker {owner} stopped: {report.summary()}")
    return Exit.ATTENTION if report.paused else Exit.OK
