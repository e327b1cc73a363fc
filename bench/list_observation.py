"""The reconciler at scale: list pages against one GET per batch per poll.

    python -m bench.list_observation --batches 10000 --seconds 90 --db postgres

B tracked batches, all in progress for the whole run (for an hour already, by
default: the poll policy then asks for a poll every 300 s), on a scratch database; the
simulator in its own process. ``--reconcilers`` reconcilers (threads of this process)
run pass after pass for the given wall time, first observing through list pages
(``reconcile_list_min_tracked``, the default 50), then, on a fresh database, with
single GETs only (``0``). Reported for each: observations recorded, the polls the poll
policy asked for (each a GET without lists: the batches due when a walk began, plus
every single GET), the requests sent (the simulator's count), requests per policy
poll and per observation, the reconcilers' CPU per observation (this process: the
reconcilers, their database driver and SQLite when that is the database), how many
batches were overdue by more than 10 s at the end (the policy not kept) and the most
at any sample during the run (counted every second from the start: the cold start
included), and how late the batches due at the end were
(percentiles of now - next_poll_at over every in-flight batch, 0 for those not due).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from datetime import timedelta

from sqlalchemy import func, select

from bench.harness import SIM_KEY, RunningSimulator, scratch_database, simulator
from orchestrator.cli.wiring import build_client
from orchestrator.clock import SystemClock
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch
from orchestrator.db.polls import in_flight
from orchestrator.processes.list_observation import Walk
from orchestrator.processes.reconciler import Reconciler
from orchestrator.secret import Secret
from orchestrator.settings import Settings

# observations, policy polls asked, observations by list pages, requests, list pages,
# passes, batches overdue at the end, CPU seconds
FIELDS = (
    "observations",
    "asked",
    "walked",
    "requests",
    "list_pages",
    "passes",
    "late",
    "late_peak",
    "due_end",
    "cpu",
)
Run = dict[str, float]
SAMPLE_S = 1.0  # how often the overdue batches are counted
SAMPLE_EVERY_S = 5.0  # the most of each such window is shown


def requests_sent(sim: RunningSimulator) -> int:
    totals = sim.counters()["requests_total"]
    return int(totals.get("retrieve", 0)) + int(totals.get("list", 0))


def late(db: Database, seconds: float) -> int:
    cutoff = SystemClock().now() - timedelta(seconds=seconds)
    with db.transaction() as s:
        count = s.scalar(select(func.count()).where(in_flight(), Batch.next_poll_at < cutoff))
        return int(count or 0)


def lateness(db: Database) -> list[float]:
    """Seconds each in-flight batch is past its next poll now (0: not due yet), sorted."""
    now = SystemClock().now()
    with db.transaction() as s:
        due = s.scalars(select(Batch.next_poll_at).where(in_flight())).all()
    return sorted(max(0.0, (now - at).total_seconds()) for at in due if at is not None)


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    pick = [values[min(len(values) - 1, int(p * len(values)))] for p in (0.5, 0.9, 0.99)]
    return "p50 {:.1f} / p90 {:.1f} / p99 {:.1f} / max {:.1f} s".format(*pick, values[-1])


def run(
    sim: RunningSimulator,
    ids: list[str],
    backend: str,
    min_tracked: int,
    seconds: float,
    reconcilers: int,
) -> tuple[Run, list[float], list[str]]:
    result: Run = dict.fromkeys(FIELDS, 0.0)
    with scratch_database(backend, tag=f"_{min_tracked}") as url:
        db = Database.connect(url, pool_size=12 * reconcilers)
        BatchStore(db).track(ids, now=SystemClock().now(), source="bench")
        settings = Settings(
            database_url=url,
            api_key=Secret(SIM_KEY),
            base_url=sim.url,
            reconcile_concurrency=8,
            reconcile_list_min_tracked=min_tracked,
        )
        clients = [build_client(settings) for _ in range(reconcilers)]
        before = requests_sent(sim)
        lock, stop = threading.Lock(), threading.Event()
        running = [
            Reconciler(db, c, settings, SystemClock(), f"bench-{n}", stop=stop)
            for n, c in enumerate(clients)
        ]

        def counting(r: Reconciler) -> None:
            walk = r.lister.walk

            def counted() -> Walk:
                done = walk()
                with lock:
                    result["asked"] += done.due
                    result["walked"] += len(done.records)
                return done

            r.lister.walk = counted  # type: ignore[method-assign]

        def passes(r: Reconciler, end: float) -> None:
            while time.monotonic() < end:
                summary = r.run_once()
                with lock:
                    result["passes"] += 1
                    result["observations"] += summary.polled
                    result["list_pages"] += summary.list_pages
                if summary.claimed == 0 and summary.polled == 0:
                    stop.wait(0.2)  # idle, as run_forever would

        for r in running:
            counting(r)
        cpu, end = time.process_time(), time.monotonic() + seconds
        threads = [threading.Thread(target=passes, args=(r, end)) for r in running]
        for thread in threads:
            thread.start()
        series, window = [], 0
        began, shown = time.monotonic(), SAMPLE_EVERY_S
        while time.monotonic() < end:  # the most overdue at any moment, cold start included
            stop.wait(min(SAMPLE_S, max(0.0, end - time.monotonic())))
            now_late = late(db, 10)
            window = max(window, now_late)
            result["late_peak"] = max(result["late_peak"], now_late)
            if time.monotonic() - began >= shown or time.monotonic() >= end:
                series.append(f"{time.monotonic() - began:.0f}s:{window}")
                window, shown = 0, shown + SAMPLE_EVERY_S

        for thread in threads:
            thread.join()
        result["cpu"] = time.process_time() - cpu
        result["asked"] += result["observations"] - result["walked"]  # each single GET
        result["requests"] = requests_sent(sim) - before
        result["late"] = late(db, 10)
        result["due_end"] = late(db, 0)
        spread = lateness(db)
        for r, c in zip(running, clients, strict=True):
            r.close()
            c.close()
        db.dispose()
    return result, spread, series


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
    parser.add_argument("--reconcilers", type=int, default=1, help="side by side (threads)")
    args = parser.parse_args()
    with simulator() as sim:
        ids = sim.create_batches(
            args.batches, requests=5, age_s=args.age, scenario={"running_s": 1e7}
        )
        print(
            f"{args.batches} batches in progress, {args.seconds:g} s of passes each, {args.db}, "
            f"{args.reconcilers} reconciler(s), load average {os.getloadavg()[0]:.1f}\n"
            "| observing by | passes | observations | policy polls | requests | list pages "
            "| requests / policy poll | requests / observation | CPU ms / observation "
            "| overdue > 10 s at the end | most overdue > 10 s in the run |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        runs, spreads, series = {}, {}, {}
        for name, min_tracked in (("list pages", 50), ("single GETs", 0)):
            got, spreads[name], series[name] = run(
                sim, ids, args.db, min_tracked, args.seconds, args.reconcilers
            )
            runs[name] = got
            g = {k: int(v) for k, v in got.items()}
            print(
                f"| {name} | {g['passes']} | {g['observations']} | {g['asked']} "
                f"| {g['requests']} | {g['list_pages']} "
                f"| {got['requests'] / max(1, got['asked']):.3f} "
                f"| {got['requests'] / max(1, got['observations']):.3f} "
                f"| {got['cpu'] / max(1, got['observations']) * 1000:.2f} | {g['late']} "
                f"| {g['late_peak']} |",
                flush=True,
            )
        for name, spread in spreads.items():
            print(f"lateness at the end, {name}: {percentiles(spread)}")
            print(
                f"  overdue > 10 s, the most in each {SAMPLE_EVERY_S:g} s (counted every "
                f"{SAMPLE_S:g} s): {' '.join(series[name])}"
            )
        lists, gets = runs["list pages"], runs["single GETs"]
        # What the policy asked of the GET-only run: the polls it made, and at least one
        # more for each batch still due at the end (it fell behind if there are any).
        demand = gets["observations"] + gets["due_end"]
        print(
            f"list pages: {lists['requests'] / max(1, gets['requests']):.4f}x the requests of "
            f"single GETs in the same time; {lists['requests'] / max(1, demand):.4f} per poll "
            f"the policy asked of the GET-only run ({int(demand)}: made + still due at the end; "
            f"target <= 0.1); {lists['cpu'] / max(1, lists['observations']) * 1000:.2f} ms CPU "
            "per observation (target <= 1 ms)"
        )


if __name__ == "__main__":
    main()
