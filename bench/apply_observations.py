"""Applying observations: how many server answers per second we persist.

    python -m bench.apply_observations --batches 500 --threads 1,4

Each batch is observed walking validating -> in_progress (counts growing) ->
finalizing -> completed, one observation per transaction through
`BatchStore.record_observation` (row lock, state machine, events), which is what
the worker and the reconciler do for every answer.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select

from bench.harness import scratch_database
from orchestrator.clock import SystemClock
from orchestrator.core.observation import parse_batch
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import BatchEvent

T0 = 1_767_225_600


def script(batch_id: str) -> list[dict[str, Any]]:
    base: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "created_at": T0,
    }
    steps: list[dict[str, Any]] = [dict(base, status="validating")]
    for done in (10, 40, 80):
        steps.append(
            dict(
                base,
                status="in_progress",
                in_progress_at=T0 + 5,
                request_counts={"total": 100, "completed": done, "failed": 1},
            )
        )
    steps.append(
        dict(
            base,
            status="finalizing",
            in_progress_at=T0 + 5,
            finalizing_at=T0 + 50,
            request_counts={"total": 100, "completed": 99, "failed": 1},
        )
    )
    steps.append(
        dict(
            base,
            status="completed",
            in_progress_at=T0 + 5,
            finalizing_at=T0 + 50,
            completed_at=T0 + 60,
            output_file_id=f"file-o-{batch_id}",
            request_counts={"total": 100, "completed": 99, "failed": 1},
        )
    )
    return steps


def run(url: str, batches: int, threads: int) -> tuple[int, float]:
    db = Database.connect(url, pool_size=threads + 2)
    store = BatchStore(db)
    clock = SystemClock()
    observations = [
        [parse_batch(step) for step in script(f"batch_{n:06d}")] for n in range(batches)
    ]

    def apply(sequence: list[Any]) -> None:
        for observed in sequence:
            store.record_observation(observed, now=clock.now(), source="bench")

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(apply, observations))
    elapsed = time.perf_counter() - start
    with db.transaction() as s:
        events = s.scalar(select(func.count()).select_from(BatchEvent))
    db.dispose()
    assert events == batches * 4, events  # validating, in_progress, finalizing, completed
    return sum(len(o) for o in observations), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--threads", default="1,4")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    print("| backend | threads | observations | seconds | observations/s |")
    print("|---|---|---|---|---|")
    for backend in args.backends.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            with scratch_database(backend) as url:
                count, seconds = run(url, args.batches, threads)
            print(
                f"| {backend} | {threads} | {count} | {seconds:.2f} | {count / seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
