"""The reconciler at scale: list pages against one GET per batch per poll.

    python -m bench.list_observation --batches 10000 --seconds 60 --db postgres

B tracked batches, all in progress for the whole run (for an hour already, by
default: the poll policy then asks for a poll every 300 s), on a scratch database; the
simulator in its own process. One reconciler runs pass after pass for the given
wall time, first observing through list pages (``reconcile_list_min_tracked``, the
default 50), then, on a fresh database, with single GETs only (``0``). Reported for
each: observations recorded, the polls the poll policy asked for (each a GET without
lists: the batches due when a walk began, plus every single GET), the requests sent
(the simulator's count), requests per policy poll and per observation, the
reconciler's CPU per observation (this process: the reconciler, its database driver
and SQLite when that is the database), and how many batches were overdue by more than
10 s at the end (the policy not kept).
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import timedelta

from sqlalchemy import func, select

from bench.harness import SIM_KEY, RunningSimulator, scratch_database, simulator
from orchestrator.cli.wiring import build_client
from orchestrator.clock import SystemClock
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.list_polls import in_flight
from orchestrator.db.models import Batch
from orchestrator.processes.list_observation import Walk
from orchestrator.processes.reconciler import Reconciler
from orchestrator.secret import Secret
from orchestrator.settings import Settings

# observations, policy polls asked, observations by list pages, requests, list pages,
# passes, batches overdue at the end, CPU seconds
FIELDS = ("observations", "asked", "walked", "requests", "list_pages", "passes", "late", "cpu")
Run = dict[str, float]


def requests_sent(sim: RunningSimulator) -> int:
    totals = sim.counters()["requests_total"]
    return int(totals.get("retrieve", 0)) + int(totals.get("list", 0))


def late(db: Database, seconds: float) -> int:
    cutoff = SystemClock().now() - timedelta(seconds=seconds)
    with db.transaction() as s:
        count = s.scalar(select(func.count()).where(in_flight(), Batch.next_poll_at < cutoff))
        return int(count or 0)


def run(
    sim: RunningSimulator, ids: list[str], backend: str, min_tracked: int, seconds: float
) -> Run:
    result: Run = dict.fromkeys(FIELDS, 0.0)
    with scratch_database(backend, tag=f"_{min_tracked}") as url:
        db = Database.connect(url, pool_size=12)
        BatchStore(db).track(ids, now=SystemClock().now(), source="bench")
        settings = Settings(
            database_url=url,
            api_key=Secret(SIM_KEY),
            base_url=sim.url,
            reconcile_concurrency=8,
            reconcile_list_min_tracked=min_tracked,
        )
        client = build_client(settings)
        before = requests_sent(sim)
        with Reconciler(db, client, settings, SystemClock(), "bench", stop=threading.Event()) as r:
            walk = r.lister.walk

            def counted() -> Walk:
                done = walk()
                result["asked"] += done.due
                result["walked"] += len(done.records)
                return done

            r.lister.walk = counted  # type: ignore[method-assign]
            cpu, end = time.process_time(), time.monotonic() + seconds
            while time.monotonic() < end:
                summary = r.run_once()
                result["passes"] += 1
                result["observations"] += summary.polled
                result["list_pages"] += summary.list_pages
                if summary.claimed == 0 and summary.polled == 0:
                    time.sleep(0.2)  # idle, as run_forever would
            result["cpu"] = time.process_time() - cpu
        result["asked"] += result["observations"] - result["walked"]  # each single GET
        result["requests"] = requests_sent(sim) - before
        result["late"] = late(db, 10)
        client.close()
        db.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument(
        "--age", type=float, default=3600.0, help="seconds each batch has been in progress"
    )
    args = parser.parse_args()
    with simulator() as sim:
        ids = sim.create_batches(
            args.batches, requests=5, age_s=args.age, scenario={"running_s": 1e7}
        )
        print(
            f"{args.batches} batches in progress, {args.seconds:g} s of passes each, {args.db}\n"
            "| observing by | passes | observations | policy polls | requests | list pages "
            "| requests / policy poll | requests / observation | CPU ms / observation "
            "| overdue > 10 s at the end |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        runs = {}
        for name, min_tracked in (("list pages", 50), ("single GETs", 0)):
            got = run(sim, ids, args.db, min_tracked, args.seconds)
            runs[name] = got
            g = {k: int(v) for k, v in got.items()}
            print(
                f"| {name} | {g['passes']} | {g['observations']} | {g['asked']} "
                f"| {g['requests']} | {g['list_pages']} "
                f"| {got['requests'] / max(1, got['asked']):.3f} "
                f"| {got['requests'] / max(1, got['observations']):.3f} "
                f"| {got['cpu'] / max(1, got['observations']) * 1000:.2f} | {g['late']} |",
                flush=True,
            )
        lists, gets = runs["list pages"], runs["single GETs"]
        print(
            f"list pages: {lists['requests'] / max(1, gets['requests']):.4f}x the requests of "
            f"single GETs in the same time (target <= 0.1), "
            f"{lists['requests'] / max(1, lists['asked']):.3f} per policy poll; "
            f"{lists['cpu'] / max(1, lists['observations']) * 1000:.2f} ms CPU per observation "
            "(target <= 1 ms)"
        )


if __name__ == "__main__":
    main()
