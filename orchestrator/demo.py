"""The main job end to end on embedded defaults: `orchestrator demo`.

A simulator on a free loopback port stands in for the API (no key needed), a
SQLite file is the database, and the real worker and reconciler run side by
side in threads. A few dozen batches are created across every status, all are
asked to be cancelled, and the run ends when every cancel request is closed and
every result file is harvested.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.cli.wiring import build_async_client, build_client
from orchestrator.clock import SystemClock, utcnow
from orchestrator.core.cancel_request import FINAL_STATES, OPEN_STATES
from orchestrator.core.harvest import HarvestState
from orchestrator.db import migrate
from orchestrator.db.cancel_outcomes import cancel_outcomes
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.queries import OperatorQueries
from orchestrator.db.upkeep import upkeep_snapshot
from orchestrator.errors import ConfigError
from orchestrator.processes.reconciler import Reconciler
from orchestrator.processes.worker import CancelWorker
from orchestrator.secret import Secret
from orchestrator.settings import Settings
from orchestrator.simulator import Scenario, Simulator, SimulatorConfig, SimulatorServer

DEMO_KEY = "sk-sim-demo"
# The demo stamps its SQLite file with this `PRAGMA application_id` (bytes 68-71 of
# the file header) before anything else, and only ever resets a file that carries it.
DEMO_APPLICATION_ID = int.from_bytes(b"orcD", "big")
SQLITE_HEADER_MAGIC = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm")
TIME_SCALE = 60.0  # one simulated minute per real second: 10 min of cancelling is 10 s

# (label, how many, requests each, age in simulated seconds, scenario overrides,
#  cancel already sent by someone else this many simulated seconds after creation)
Plan = tuple[str, int, int, float, dict[str, Any], float | None]
PLAN: tuple[Plan, ...] = (
    ("validating", 4, 40, 0, {"validating_s": 120}, None),
    ("in_progress", 10, 200, 400, {}, None),
    ("in_progress, ids late", 3, 200, 400, {"file_ids_lag_polls": 1}, None),
    ("finalizing", 3, 100, 3650, {}, None),
    ("loses the race", 3, 100, 400, {"cancel_outcome": "completed"}, None),
    ("already cancelling", 3, 100, 500, {"cancelling_s": 600}, 450),
    ("already cancelled", 2, 100, 2000, {}, 300),
    ("completed", 3, 100, 4000, {}, None),
    ("failed", 2, 50, 60, {"fail_validation": True}, None),
    ("expired", 2, 100, 90_000, {"running_s": 100_000}, None),
)
DEMO_SCENARIO = Scenario(running_s=3600, finalizing_s=120, cancelling_s=300, body_bytes=300)


def demo_settings(database_url: str, base_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        api_key=Secret(DEMO_KEY),
        base_url=base_url,
        worker_concurrency=8,
        worker_idle_seconds=0.2,
        reconcile_concurrency=8,
        reconcile_idle_seconds=0.2,
        poll_initial_seconds=0.5,
        poll_max_seconds=2.0,
        poll_cancelling_max_seconds=1.0,
        retry_durable_initial=1.0,
    )


@dataclass(frozen=True)
class DemoBatch:
    batch_id: str
    label: str


@dataclass(frozen=True)
class Progress:
    batches: int
    by_status: dict[str, int]
    cancels_open: int
    cancels_closed: int
    harvested: int
    results: int

    @property
    def finished(self) -> bool:
        return self.cancels_open == 0 and self.harvested == self.batches


@dataclass(frozen=True)
class Outcome:
    batch_id: str
    label: str
    status: str | None
    cancel: str | None
    results: int
    outputs: int  # lines of the output file: the paid-for answers kept
    requests: int | None
    seconds_to_terminal: float | None


def is_demo_database(path: Path) -> bool:
    """Whether `path` is a SQLite file the demo made: its header has the demo's stamp.

    Reads the 100-byte header with plain file I/O and opens no SQLite connection,
    so looking never creates side files or changes a byte.
    """
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except OSError:
        return False
    return (
        len(header) == 100
        and header[:16] == SQLITE_HEADER_MAGIC
        and header[68:72] == DEMO_APPLICATION_ID.to_bytes(4, "big")
    )


def check_demo_database_path(path: Path) -> None:
    """Refuse, before touching anything, unless `path` is absent or a previous demo database."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_file() and is_demo_database(path):
        return
    raise ConfigError(
        f"{path} exists and is not a demo database; the demo will not overwrite it. "
        "Pick another --database path, or remove the file yourself."
    )


def fresh_database(path: Path) -> str:
    """The demo's own SQLite file, recreated each run so the demo starts clean.

    Only a file that is absent or was made by the demo is replaced (see
    `check_demo_database_path`); the new one is stamped as the demo's first.
    """
    check_demo_database_path(path)
    for suffix in ("", *SIDE_FILES):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return migrate.create_stamped_sqlite(path, DEMO_APPLICATION_ID)


def create_batches(simulator: Simulator) -> list[DemoBatch]:
    made: list[DemoBatch] = []
    for label, count, requests, age, overrides, cancelled_after in PLAN:
        scenario = DEMO_SCENARIO.with_overrides(overrides)
        for _ in range(count):
            batch_id = simulator.create_batch(
                requests,
                scenario,
                age_s=age,
                cancel_after_s=cancelled_after,
                metadata={"demo": label},
            )
            made.append(DemoBatch(batch_id, label))
    return made


def progress(db: Database) -> Progress:
    fleet = OperatorQueries(db).snapshot(utcnow())
    harvests = upkeep_snapshot(db).harvests_by_state
    cancels = fleet.cancels_by_state
    return Progress(
        batches=sum(fleet.batches_by_status.values()),
        by_status=fleet.batches_by_status,
        cancels_open=sum(cancels.get(state.value, 0) for state in OPEN_STATES),
        cancels_closed=sum(cancels.get(state.value, 0) for state in FINAL_STATES),
        harvested=harvests.get(HarvestState.DONE, 0) + harvests.get(HarvestState.MISSING, 0),
        results=fleet.results_stored,
    )


def outcomes(db: Database, batches: list[DemoBatch]) -> list[Outcome]:
    labels = {b.batch_id: b.label for b in batches}
    order = {b.batch_id: n for n, b in enumerate(batches)}
    found = sorted(cancel_outcomes(db), key=lambda o: order.get(o.batch_id, 0))
    return [Outcome(label=labels.get(o.batch_id, ""), **dataclasses.asdict(o)) for o in found]


def run_demo(
    database: Path,
    *,
    on_progress: Callable[[Progress], None],
    timeout_s: float = 50.0,
) -> tuple[list[Outcome], Progress, str]:
    """Run everything; returns the outcomes, the last progress, and the database URL."""
    url = fresh_database(database)
    simulator = Simulator(SimulatorConfig(api_key=DEMO_KEY, time_scale=TIME_SCALE), SystemClock())
    stop = threading.Event()
    with SimulatorServer(simulator) as server:
        settings = demo_settings(url, server.url)
        db = Database.connect(url)
        batches = create_batches(simulator)
        CancelStore(db).request(
            [b.batch_id for b in batches],
            now=SystemClock().now(),
            requested_by="demo",
            reason="demo: cancel everything, keep what finished",
        )
        threads = _start_processes(settings, db, stop)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                current = progress(db)
                on_progress(current)
                if current.finished or time.monotonic() > deadline:
                    break
                stop.wait(0.25)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        result = outcomes(db, batches), progress(db), url
        db.dispose()
    return result


def _start_processes(
    settings: Settings, db: Database, stop: threading.Event
) -> list[threading.Thread]:
    clock = SystemClock()
    worker_client = build_async_client(settings)
    reconcile_client = build_client(settings)
    worker = CancelWorker(CancelStore(db), worker_client, settings, clock, "demo-worker", stop=stop)
    reconciler = Reconciler(db, reconcile_client, settings, clock, "demo-reconciler", stop=stop)

    def run_worker() -> None:
        worker.run()  # closes the client's connections

    def run_reconciler() -> None:
        try:
            reconciler.run()
        finally:
            reconciler.close()
            reconcile_client.close()

    threads = [
        threading.Thread(target=run_worker, name="demo-worker", daemon=True),
        threading.Thread(target=run_reconciler, name="demo-reconciler", daemon=True),
    ]
    for thread in threads:
        thread.start()
    return threads
