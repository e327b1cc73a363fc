"""`orchestrator worker` and `orchestrator resume`: the arguments (what they do:
worker_commands); and the metrics flags of every long-running process."""

from __future__ import annotations

import argparse

from orchestrator.cli.output import REPORTS, add_output_arguments


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser(
        "worker",
        help="send the requested cancels (long-running, or --once)",
        description=(
            "Lease due cancel requests from the database and send POST /batches/{id}/cancel, "
            "many at once, recording every attempt. Safe to run many of, on many machines, "
            "against one PostgreSQL database. SIGTERM/SIGINT (without --once): end the sends "
            "in flight at once, without waiting for their answers (each is recorded and tried "
            "again later), give back the cancels not sent yet (due at once), exit 0; a second "
            "signal stops at once. A 401/403 pauses all sending (every worker) until the pause "
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
    add_output_arguments(worker, REPORTS, limit=False)
    worker.set_defaults(handler="worker_commands.run_worker")

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
    add_output_arguments(resume, REPORTS, limit=False)
    resume.set_defaults(handler="worker_commands.run_resume")


def add_metrics_port_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        dest="setting_metrics_port",
        metavar="PORT",
        help="serve Prometheus metrics on this port (env ORCHESTRATOR_METRICS_PORT)",
    )
    parser.add_argument(
        "--metrics-address",
        dest="setting_metrics_address",
        metavar="ADDR",
        help="the address to serve them on (default 127.0.0.1, this host only; "
        "0.0.0.0 for every interface; env ORCHESTRATOR_METRICS_ADDRESS)",
    )
