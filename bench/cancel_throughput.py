"""Cancel throughput: the worker against a local server with a fixed added latency.

    python -m bench.cancel_throughput --n 2000 --latency 0.1 --concurrency 1,8,32,64

For each backend and concurrency, N cancel requests are recorded, then one
worker drains them (`--once`, its sends on the async client), every attempt
persisted. The bound is
N x latency / concurrency; a sequential loop of plain client calls over a sample
of the same batches (no database) is timed in the same run for comparison.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from bench.harness import SIM_KEY, CpuSample, RunningSimulator, scratch_database, simulator
from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiSettings, BatchApiClient
from orchestrator.clock import SystemClock
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import CancelAttempt, CancelRequest
from orchestrator.processes.worker import CancelWorker, WorkerConfig
from orchestrator.secret import Secret


@dataclass
class Row:
    backend: str
    concurrency: int
    seconds: float
    rate: float
    bound: float

    @property
    def ratio(self) -> float:
        return self.seconds / self.bound


def client_for(sim: RunningSimulator) -> BatchApiClient:
    settings = ApiSettings(api_key=Secret(SIM_KEY), base_url=sim.url)
    return BatchApiClient(settings, policy=RetryPolicy())


def run_worker(url: str, sim: RunningSimulator, ids: list[str], concurrency: int) -> float:
    db = Database.connect(url, pool_size=concurrency + 4)
    store = CancelStore(db)
    store.request(ids, now=SystemClock().now(), requested_by="bench")
    settings = ApiSettings(api_key=Secret(SIM_KEY), base_url=sim.url)
    client = AsyncBatchApiClient(settings, policy=RetryPolicy(), max_connections=concurrency)
    worker = CancelWorker(
        store,
        client,
        config=WorkerConfig(concurrency=concurrency, idle_seconds=0.01),
        policy=RetryPolicy(),
        clock=SystemClock(),
        owner=f"bench-{concurrency}",
    )
    sim_before, ours_before = CpuSample.take(sim.process.pid), CpuSample.take(os.getpid())
    start = time.perf_counter()
    report = worker.run(threading.Event(), once=True)
    elapsed = time.perf_counter() - start
    sim_after, ours_after = CpuSample.take(sim.process.pid), CpuSample.take(os.getpid())
    ours = ours_after.process - ours_before.process
    server = sim_after.process - sim_before.process
    rest = sim_after.machine - sim_before.machine - ours - server
    per = 1000 / len(ids)
    print(
        f"  CPU ms per cancel: worker {ours * per:.2f}, simulator {server * per:.2f}, "
        f"rest of the machine (the database server, other load) {max(rest, 0.0) * per:.2f}; "
        f"{elapsed * os_cores():.1f} core-seconds were available"
    )
    with db.transaction() as s:
        grouped = s.execute(select(CancelRequest.state, func.count()).group_by(CancelRequest.state))
        states = {str(row[0]): int(row[1]) for row in grouped}
        attempts = s.scalar(select(func.count()).select_from(CancelAttempt))
    db.dispose()
    if states != {"accepted": len(ids)} or attempts != len(ids) or report.accepted != len(ids):
        raise SystemExit(
            f"lost work: states {states}, {attempts} attempts for {len(ids)} ids, "
            f"report {report.summary()}"
        )
    return elapsed


def os_cores() -> int:
    return len(os.sched_getaffinity(0))


def sequential(sim: RunningSimulator, ids: list[str]) -> float:
    with client_for(sim) as client:
        start = time.perf_counter()
        for batch_id in ids:
            client.cancel(batch_id)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added per cancel")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--sequential-sample", type=int, default=100)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    rows: list[Row] = []
    with simulator() as sim:
        ids = sim.create_batches(
            args.n, requests=10, age_s=10, scenario={"cancelling_s": 1e6, "running_s": 1e6}
        )
        sim.add_fault(kind="slow", endpoint="cancel", delay_s=args.latency, times=None)
        sample = ids[: args.sequential_sample]
        seq = sequential(sim, sample)
        per_cancel = seq / len(sample)
        print(
            f"sequential loop (no database): {len(sample)} cancels in {seq:.2f}s = "
            f"{len(sample) / seq:.1f}/s ({per_cancel * 1000:.1f} ms each; "
            f"{per_cancel * args.n:.1f}s for all {args.n})"
        )
        for backend in args.backends.split(","):
            for concurrency in levels:
                n = args.n if concurrency > 1 else min(args.n, args.sequential_sample)
                with scratch_database(backend) as url:
                    seconds = run_worker(url, sim, ids[:n], concurrency)
                bound = n * args.latency / concurrency
                rows.append(Row(backend, concurrency, seconds, n / seconds, bound))
                r = rows[-1]
                print(
                    f"{backend:8} c={concurrency:<3} n={n:<5} {seconds:6.2f}s "
                    f"{r.rate:7.1f} cancels/s  bound {bound:5.2f}s  ratio {r.ratio:.2f}",
                    flush=True,
                )
    print("\n| backend | concurrency | cancels/s | seconds | bound (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.backend} | {r.concurrency} | {r.rate:.1f} | {r.seconds:.2f} | "
            f"{r.bound:.2f} | {r.ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
