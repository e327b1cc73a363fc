"""Soak: thousands of batches, injected faults, many processes on PostgreSQL, random SIGKILLs.

    python -m bench.soak --batches 5000 --workers 4 --reconcilers 2 --kills 50

The simulator runs in its own process with faults switched on (5xx, 429 with
Retry-After and retry-after-ms, HTML pages, dropped connections before and
mid-answer, truncated downloads, slow cancels) and a compressed clock. It is
given thousands of batches in every situation: running, validating, finalizing,
already ended (completed, expired, failed), already cancelling or cancelled by
someone else, cancels that lose the race or end expired/failed, file ids that
appear late, "" file ids. Most are asked to be cancelled with `orchestrator
cancel --from-file` (in waves, the first with a few malformed ids), the rest
tracked with `orchestrator track`. Several `orchestrator worker` and
`orchestrator reconcile` processes work against a scratch PostgreSQL database
while random ones are SIGKILLed and restarted throughout.

When every cancel request is settled and every batch harvested (or the deadline
passes), the processes are stopped and the invariants are checked against the
simulator's ground truth (see bench/soak_check.py and docs/soak.md). It prints
the figures and a last line `SOAK PASS` or `SOAK FAIL: ...`; exit 1 on failure.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.harness import (
    SIM_KEY,
    RunningSimulator,
    faketime_env,
    free_port,
    scratch_database,
    simulator,
)
from bench.soak_check import (
    Figures,
    Problems,
    check_budget,
    check_cancel_traffic,
    check_cancels,
    check_files_bytes,
    check_results,
    check_terminal,
    check_transitions,
    read_server,
    read_stored,
    stored_figures,
)
from bench.soak_cli import CliCalls, write_calls
from bench.soak_plan import PlannedBatch, ProcessSettings, fault_rules, plan_batches
from bench.soak_procs import Supervisor
from bench.soak_webhooks import PATH as HOOK_PATH
from bench.soak_webhooks import SECRET as HOOK_SECRET
from bench.soak_webhooks import (
    check_webhooks,
    receiver_env,
    reconcile_env,
    webhook_fault_rules,
)
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, CancelRequest

Log = Callable[[str], None]
Envs = dict[str, dict[str, str]]  # "worker" / "reconcile" / "cli" -> a process environment
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class SoakConfig:
    batches: int = 5000
    workers: int = 4
    reconcilers: int = 2
    kills: int = 50
    kill_interval: float = 3.0  # mean seconds between kills (each gap uniform in 0.2x..1.8x)
    time_scale: float = 30.0  # a batch runs for 2 minutes: most cancels land while it runs
    min_requests: int = 3
    max_requests: int = 300
    fault_rate: float = 1.0  # multiplies every fault's probability (0: no faults)
    waves: int = 4  # cancel requests are recorded in this many CLI calls ...
    wave_gap: float = 3.0  # ... this many seconds apart, while the processes run
    deadline: float = 600.0  # seconds the processes get to finish the work
    seed: int = 7
    bytes_sample: int = 300  # files downloaded again to compare bytes and SHA-256
    webhooks: bool = False  # a receiver, signed events with faults, stretched polling
    skew_minutes: float = 0.0  # worker-0's wall clock runs this far ahead, reconcile-0's behind
    settings: ProcessSettings = field(default_factory=ProcessSettings)


@dataclass
class SoakResult:
    problems: Problems
    figures: Figures
    counters: dict[str, Any]  # the simulator's, at the end of the work
    kills: dict[str, int]  # by role

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        return "SOAK PASS" if self.passed else f"SOAK FAIL: {self.problems.summary()}"

    def report(self) -> str:
        lines = [f"  {name}: {value}" for name, value in self.figures.values.items()]
        return "\n".join([*lines, self.verdict])


@dataclass(frozen=True)
class Progress:
    batches: int
    open_cancels: int
    unharvested: int
    results: int

    def done(self, expected: int) -> bool:
        return self.batches == expected and self.open_cancels == 0 and self.unharvested == 0


def read_progress(db: Database) -> Progress:
    with db.transaction() as s:
        batches = s.scalar(select(func.count()).select_from(Batch)) or 0
        open_cancels = s.scalar(
            select(func.count()).where(CancelRequest.state.in_(("pending", "accepted")))
        )
        unharvested = s.scalar(
            select(func.count()).where(Batch.harvest_state.not_in(("done", "missing")))
        )
        results = s.scalar(select(func.coalesce(func.sum(Batch.results_stored), 0)))
    return Progress(batches, open_cancels or 0, unharvested or 0, int(results or 0))


def create_batches(control: httpx.Client, planned: list[PlannedBatch]) -> dict[str, PlannedBatch]:
    """Create the batches through the control API (a few at a time); id -> its plan."""

    def one(plan: PlannedBatch) -> tuple[str, PlannedBatch]:
        answer = control.post("/_sim/batches", json=plan.body).raise_for_status()
        return str(answer.json()["id"]), plan

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, planned))


def process_env(
    database_url: str, sim: RunningSimulator, settings: ProcessSettings, hook_port: int = 0
) -> Envs:
    base = {
        **os.environ,
        "ORCHESTRATOR_DATABASE_URL": database_url,
        "OPENAI_BASE_URL": sim.url,
        "OPENAI_API_KEY": SIM_KEY,
    }
    envs = {role: {**base, **settings.env(role)} for role in ("worker", "reconcile")}
    envs["cli"] = base
    if hook_port:  # --webhooks
        envs["webhooks"] = receiver_env(base, hook_port)
        envs["reconcile"].update(reconcile_env(settings.poll_max_seconds))
    return envs


@contextmanager
def _simulator(
    time_scale: float, hook_port: int = 0, budget: float | None = None
) -> Iterator[RunningSimulator]:
    sim: RunningSimulator | None = None
    hooks = (f"http://127.0.0.1:{hook_port}{HOOK_PATH}",) if hook_port else ()
    # With a budget, the account's limit is twice it: a 429 from it means the budget broke.
    limit = 2 * budget if budget is not None else None
    try:
        with simulator(
            time_scale, webhook_urls=hooks, webhook_secret=HOOK_SECRET, rate_limit=limit
        ) as sim:
            yield sim
    finally:
        # harness.simulator leaves open the pipe it read the URL from
        if sim is not None and sim.process.stdout is not None:
            sim.process.stdout.close()


@contextmanager
def _timer(figures: Figures, name: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    figures.line(name, f"{time.monotonic() - start:.1f}s")


def run_soak(config: SoakConfig, database_url: str, work_dir: Path, log: Log = print) -> SoakResult:
    """The whole soak against a migrated, empty database; logs go under ``work_dir``."""
    return Soak(config, database_url, work_dir, log).run()


class Soak:
    def __init__(self, config: SoakConfig, database_url: str, work_dir: Path, log: Log) -> None:
        self.config = config
        self.database_url = database_url
        self.work_dir = work_dir
        self.log = log
        self.problems = Problems()
        self.figures = Figures()
        self.rng = random.Random(config.seed)

    def run(self) -> SoakResult:
        started = time.monotonic()
        config = self.config
        hook_port = free_port() if config.webhooks else 0
        budget = config.settings.budget
        with _simulator(config.time_scale, hook_port, budget) as sim, sim.control() as control:
            rules = fault_rules(config.fault_rate)
            if config.webhooks:
                rules += webhook_fault_rules(config.fault_rate)
            control.post("/_sim/faults", json=rules).raise_for_status()
            envs = process_env(self.database_url, sim, config.settings, hook_port)
            supervisor = Supervisor(
                envs,
                self.work_dir / "logs",
                config.workers,
                config.reconcilers,
                random.Random(self.rng.random()),
                receivers=1 if config.webhooks else 0,
                slot_env={
                    "worker-0": faketime_env(config.skew_minutes),
                    "reconcile-0": faketime_env(-config.skew_minutes),
                },
            )
            db = Database.connect(self.database_url, pool_size=1)
            supervisor.start()  # they boot while the batches are being created
            try:
                with _timer(self.figures, "setup time"):
                    batches = self._create(control)
                with _timer(self.figures, "work time"):
                    self._work(supervisor, batches, envs["cli"], db)
            finally:
                supervisor.stop()
                db.dispose()
            for message in supervisor.unexpected:
                self.problems.add("processes", message)
            counters = sim.counters()
            control.delete("/_sim/faults").raise_for_status()  # the checks download files again
            with _timer(self.figures, "check time"):
                self._check(control, batches, counters)
            check_budget(self.problems, self.figures, counters, budget)
            _traffic_figures(self.figures, counters, supervisor, config)
        self.figures.line("wall time", f"{time.monotonic() - started:.1f}s")
        return SoakResult(self.problems, self.figures, counters, supervisor.kills)

    def _create(self, control: httpx.Client) -> dict[str, PlannedBatch]:
        config = self.config
        planned = plan_batches(
            config.batches,
            self.rng,
            min_requests=config.min_requests,
            max_requests=config.max_requests,
        )
        batches = create_batches(control, planned)
        sizes = [p.requests for p in batches.values()]
        self.figures.line("batches", len(batches))
        self.figures.line("batches by kind", dict(Counter(p.kind for p in batches.values())))
        self.figures.line(
            "requests per batch",
            f"{min(sizes)}..{max(sizes)}, mean {sum(sizes) / len(sizes):.0f}, total {sum(sizes)}",
        )
        return batches

    def _work(
        self,
        supervisor: Supervisor,
        batches: dict[str, PlannedBatch],
        cli_env: dict[str, str],
        db: Database,
    ) -> None:
        """Record the intent, kill and restart at random, until the work is done."""
        config, rng = self.config, self.rng
        start = time.monotonic()
        asked = sorted(b for b, p in batches.items() if p.cancel)
        tracked = sorted(b for b, p in batches.items() if not p.cancel)
        calls = write_calls(
            tracked,
            asked,
            waves=config.waves,
            gap=config.wave_gap,
            start=start,
            work_dir=self.work_dir,
            rng=rng,
        )
        cli = CliCalls(calls, cli_env, self.work_dir, self.problems)
        pause = threading.Event()  # never set: its wait() is the loop's tick

        def gap() -> float:
            return config.kill_interval * rng.uniform(0.2, 1.8)

        # Kills start once there is work to interrupt, then come every gap() seconds.
        next_kill: float | None = None
        next_look, next_report = start, start
        progress = read_progress(db)
        while True:
            now = time.monotonic()
            for message in supervisor.check():
                self.log(f"  !! {message}")
            for line in cli.tick(now):
                self.log(line)
            if next_kill is None and cli.cancels_recorded:
                next_kill = now + gap()
            more = supervisor.total_kills < config.kills
            if more and next_kill is not None and now >= next_kill:
                supervisor.kill_random()
                next_kill = now + gap()
            if now >= next_look:
                progress = read_progress(db)
                next_look = now + 0.5
                finished = not cli.pending and progress.done(len(batches))
                if now >= next_report or finished:
                    self._report(now - start, progress, len(batches), supervisor)
                    next_report = now + PROGRESS_EVERY_S
                if finished:
                    break
            if now - start > config.deadline:
                self.problems.add("finished", f"not done after {config.deadline:g}s: {progress}")
                cli.wait(120)
                break
            pause.wait(0.05)
        if supervisor.total_kills < config.kills:
            self.problems.add(
                "kills",
                f"only {supervisor.total_kills} of {config.kills} kills before the work was "
                "done (lower --kill-interval)",
            )

    def _report(
        self, elapsed: float, progress: Progress, expected: int, supervisor: Supervisor
    ) -> None:
        self.log(
            f"  t={elapsed:5.1f}s  tracked {progress.batches}/{expected}  "
            f"cancels open {progress.open_cancels}  unharvested {progress.unharvested}  "
            f"results {progress.results}  kills {supervisor.total_kills}/{self.config.kills}"
        )

    def _check(
        self, control: httpx.Client, batches: dict[str, PlannedBatch], counters: dict[str, Any]
    ) -> None:
        problems = self.problems
        server = read_server(control, sorted(batches))
        db = Database.connect(self.database_url, pool_size=1)
        try:
            stored = read_stored(db)
            if self.config.webhooks:
                check_webhooks(problems, self.figures, db, server, counters)
        finally:
            db.dispose()
        asked = {b for b, p in batches.items() if p.cancel}
        check_terminal(problems, server, stored)
        check_cancels(problems, asked, server, stored)
        check_results(problems, server, stored)
        check_transitions(problems, stored)
        check_cancel_traffic(problems, counters)
        files = sorted(f.file_id for fs in stored.files.values() for f in fs)
        sample = random.Random(self.config.seed).sample(
            files, min(self.config.bytes_sample, len(files))
        )
        checked = check_files_bytes(problems, control, stored, sample)
        self.figures.line("files downloaded again", checked)
        stored_figures(self.figures, server, stored)


def _traffic_figures(
    figures: Figures, counters: dict[str, Any], supervisor: Supervisor, config: SoakConfig
) -> None:
    figures.line("requests served", counters["requests_total"])
    figures.line("faults injected", f"{counters['faults_total']} {counters['faults']}")
    figures.line("cancels applied by the server", counters["cancels_applied"])
    figures.line(
        "max concurrent cancels, one batch / all",
        f"{counters['max_concurrent_cancels_any_batch']} / "
        f"{counters['max_concurrent_cancels_total']}",
    )
    figures.line("kills", f"{supervisor.total_kills} of {config.kills} {supervisor.kills}")
    figures.line("unexpected exits", len(supervisor.unexpected))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = SoakConfig()
    parser.add_argument("--batches", type=int, default=d.batches)
    parser.add_argument("--workers", type=int, default=d.workers)
    parser.add_argument("--reconcilers", type=int, default=d.reconcilers)
    parser.add_argument("--kills", type=int, default=d.kills, help="SIGKILLs in all")
    parser.add_argument(
        "--kill-interval", type=float, default=d.kill_interval, help="mean seconds between kills"
    )
    parser.add_argument("--time-scale", type=float, default=d.time_scale)
    parser.add_argument("--min-requests", type=int, default=d.min_requests)
    parser.add_argument("--max-requests", type=int, default=d.max_requests)
    parser.add_argument(
        "--fault-rate", type=float, default=d.fault_rate, help="x every fault probability"
    )
    parser.add_argument("--waves", type=int, default=d.waves, help="cancel CLI calls")
    parser.add_argument(
        "--wave-gap", type=float, default=d.wave_gap, help="seconds between cancel CLI calls"
    )
    parser.add_argument("--deadline", type=float, default=d.deadline, help="seconds for the work")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--bytes-sample", type=int, default=d.bytes_sample)
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="add a webhook receiver; the simulator sends events with faults (see docs/soak.md)",
    )
    parser.add_argument(
        "--skew-minutes",
        type=float,
        default=d.skew_minutes,
        help="run worker-0's wall clock this far ahead and reconcile-0's this far behind "
        "(libfaketime)",
    )
    parser.add_argument(
        "--default-leases",
        action="store_true",
        help="the product's default lease settings instead of the soak's tight ones",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="RPS",
        help="api_max_requests_per_second for every process; the simulator limits at twice it",
    )
    parser.add_argument(
        "--list-min-tracked",
        type=int,
        default=None,
        help="reconcile_list_min_tracked (default: the product's, 50; 0: single GETs only)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="logs and id files (default: a new temp dir)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = SoakConfig(
        batches=args.batches,
        workers=args.workers,
        reconcilers=args.reconcilers,
        kills=args.kills,
        kill_interval=args.kill_interval,
        time_scale=args.time_scale,
        min_requests=args.min_requests,
        max_requests=args.max_requests,
        fault_rate=args.fault_rate,
        waves=args.waves,
        wave_gap=args.wave_gap,
        deadline=args.deadline,
        seed=args.seed,
        bytes_sample=args.bytes_sample,
        webhooks=args.webhooks,
        skew_minutes=args.skew_minutes,
        settings=ProcessSettings(
            default_leases=args.default_leases,
            budget=args.budget,
            list_min_tracked=args.list_min_tracked,
        ),
    )
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="soak-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"soak: {config}\n  logs and id files: {work_dir}", flush=True)
    with scratch_database("postgres") as url:
        result = run_soak(config, url, work_dir, log=lambda line: print(line, flush=True))
    print(result.report(), flush=True)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
