"""Scale figures: worker processes on PostgreSQL, and the reconciler's cost per poll.

    python -m bench.scale workers --n 600 --latency 0.2 --concurrency 4 --processes 1,2,4
    python -m bench.scale polls --batches 1000,10000

`workers`: N cancel requests on a scratch PostgreSQL database, drained by P
`orchestrator worker` processes started together, while the simulator adds a fixed
latency to every cancel. With the API latency the bottleneck, the bound is
N x latency / (P x concurrency); the figure is how close P processes come to P x one.

`polls`: B tracked batches, all in progress (so every poll is a real GET and a
recorded observation), one reconciler pass (`run_once`) polls each once. Reported:
wall time, CPU of the reconciling process per poll, and how both grow with B.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

from sqlalchemy import func, select

from bench.harness import SIM_KEY, RunningSimulator, scratch_database, simulator
from orchestrator.cli.wiring import build_client
from orchestrator.clock import SystemClock
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import CancelRequest
from orchestrator.processes.reconciler import Reconciler
from orchestrator.secret import Secret
from orchestrator.settings import Settings


def accepted(db: Database) -> int:
    with db.transaction() as s:
        count = s.scalar(select(func.count()).where(CancelRequest.state == "accepted"))
        return int(count or 0)


def drain_with_processes(
    sim: RunningSimulator, ids: list[str], processes: int, concurrency: int
) -> float:
    with scratch_database("postgres") as url:
        db = Database.connect(url)
        CancelStore(db).request(ids, now=SystemClock().now(), requested_by="bench")
        env = {
            **os.environ,
            "ORCHESTRATOR_DATABASE_URL": url,
            "OPENAI_BASE_URL": sim.url,
            "OPENAI_API_KEY": SIM_KEY,
            "ORCHESTRATOR_WORKER_CONCURRENCY": str(concurrency),
            "ORCHESTRATOR_WORKER_IDLE_SECONDS": "0.05",
            "ORCHESTRATOR_LOG_LEVEL": "WARNING",
        }
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "worker", "--once"],
                env=env,
                stdout=subprocess.DEVNULL,
            )
            for _ in range(processes)
        ]
        for proc in procs:
            proc.wait(600)
        elapsed = time.perf_counter() - start
        done = accepted(db)
        db.dispose()
    if done != len(ids):
        raise SystemExit(f"lost work: {done} of {len(ids)} accepted")
    return elapsed


def workers(args: argparse.Namespace) -> None:
    with simulator() as sim:
        ids = sim.create_batches(
            args.n, requests=5, age_s=10, scenario={"cancelling_s": 1e6, "running_s": 1e6}
        )
        sim.add_fault(kind="slow", endpoint="cancel", delay_s=args.latency, times=None)
        print(
            "| worker processes | concurrency each | cancels | seconds | cancels/s | bound (s) "
            "| speed-up vs 1 |"
        )
        print("|---|---|---|---|---|---|---|")
        base = None
        for processes in (int(p) for p in args.processes.split(",")):
            seconds = drain_with_processes(sim, ids, processes, args.concurrency)
            rate = args.n / seconds
            base = base or rate
            bound = args.n * args.latency / (processes * args.concurrency)
            print(
                f"| {processes} | {args.concurrency} | {args.n} | {seconds:.2f} | {rate:.1f} | "
                f"{bound:.2f} | {rate / base:.2f}x |",
                flush=True,
            )


def one_pass(sim: RunningSimulator, count: int) -> tuple[float, float]:
    ids = sim.create_batches(count, requests=5, age_s=10, scenario={"running_s": 1e6})
    with scratch_database("postgres") as url:
        db = Database.connect(url, pool_size=12)
        BatchStore(db).track(ids, now=SystemClock().now(), source="bench")
        settings = Settings(
            database_url=url, api_key=Secret(SIM_KEY), base_url=sim.url, reconcile_concurrency=8
        )
        client = build_client(settings)
        with Reconciler(db, client, settings, SystemClock(), "bench", stop=threading.Event()) as r:
            start, cpu = time.perf_counter(), time.process_time()
            summary = r.run_once()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        client.close()
        db.dispose()
    if summary.polled != count:
        raise SystemExit(f"polled {summary.polled} of {count}")
    return elapsed, cpu


def polls(args: argparse.Namespace) -> None:
    with simulator() as sim:
        print("| tracked batches | pass wall time (s) | polls/s | reconciler CPU per poll (ms) |")
        print("|---|---|---|---|")
        for count in (int(b) for b in args.batches.split(",")):
            elapsed, cpu = one_pass(sim, count)
            print(
                f"| {count} | {elapsed:.2f} | {count / elapsed:.0f} | {cpu / count * 1000:.2f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("workers")
    w.add_argument("--n", type=int, default=600)
    w.add_argument("--latency", type=float, default=0.2)
    w.add_argument("--concurrency", type=int, default=4)
    w.add_argument("--processes", default="1,2,4")
    w.set_defaults(run=workers)
    p = sub.add_parser("polls")
    p.add_argument("--batches", default="1000,10000")
    p.set_defaults(run=polls)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
