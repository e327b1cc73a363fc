"""The cancel worker's loop alone: its CPU per cancel, without HTTP or the sender.

    .venv/bin/python -m bench.worker_loop --n 2000 --db sqlite

What the worker's loop thread does for each tick of answers, in one process and one
thread: claim up to ``--tick`` due requests (``CancelStore.claim_due``), record an
accepted answer for each, with a Batch object as the simulator sends it
(``CancelStore.record_attempts``: the locking reads, the rules, the four writes) and
log the INFO line of each (``worker_report.tell``, to a file), until nothing is due.
Printed: CPU ms per cancel (the process's, over the loop only) and what was stored.
The worker's whole CPU per cancel, the sender's included, is bench/cancel_fanout.py's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

from sqlalchemy import text

from bench.harness import scratch_database
from orchestrator import logs
from orchestrator.clock import SystemClock
from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.core.observation import parse_batch
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.processes.story import PeriodicSummary
from orchestrator.processes.worker_report import tell

T0 = 1_767_225_600


def cancelling(batch_id: str) -> dict[str, Any]:
    """The Batch object a cancel's answer carries (as the simulator's)."""
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "errors": None,
        "input_file_id": "file-abc123",
        "completion_window": "24h",
        "status": "cancelling",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": T0,
        "in_progress_at": T0 + 5,
        "expires_at": T0 + 86400,
        "cancelling_at": T0 + 9,
        "request_counts": {"total": 10, "completed": 3, "failed": 0},
        "metadata": {"team": "bench"},
        "usage": None,
    }


def run(url: str, n: int, tick: int) -> float:
    """CPU seconds of the loop over ``n`` cancels."""
    db = Database.connect(url)
    clock = SystemClock()
    ids = [f"batch_{k:024x}" for k in range(n)]
    store = CancelStore(db)
    store.request(ids, now=clock.now(), requested_by="bench")
    observed = {i: parse_batch(cancelling(i), expected_id=i) for i in ids}
    story = PeriodicSummary("worker", 60, clock.now(), lambda _: (0, 0), lambda _: "")
    started = time.process_time()
    claims = store.claim_due("bench", now=clock.now(), limit=tick, lease_seconds=60)
    while claims:
        now = clock.now()
        finished = [
            (
                c,
                Attempt(
                    AttemptOutcome.ACCEPTED,
                    now,
                    clock.now(),
                    200,
                    "req_1",
                    None,
                    observed[c.batch_id],
                ),
            )
            for c in claims
        ]
        tell(story, finished, store.record_attempts("bench", finished))
        claims = store.claim_due("bench", now=clock.now(), limit=tick, lease_seconds=60)
    cpu = time.process_time() - started
    with db.transaction() as s:
        stored = (
            s.execute(text("SELECT count(*) FROM cancel_requests WHERE state = 'accepted'")),
            s.execute(text("SELECT count(*) FROM cancel_attempts")),
            s.execute(text("SELECT count(*) FROM batch_events")),
        )
        accepted, attempts, events = (int(r.scalar_one()) for r in stored)
    db.dispose()
    if (accepted, attempts) != (n, n) or events != 3 * n:
        raise SystemExit(f"lost work: {accepted} accepted, {attempts} attempts, {events} events")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="cancels (default 2000)")
    parser.add_argument("--db", default="sqlite", help="sqlite or postgres")
    parser.add_argument("--tick", type=int, default=16, help="answers a tick (16: c=32)")
    args = parser.parse_args()
    with tempfile.TemporaryFile("w") as log_file:
        sys.stderr, stderr = log_file, sys.stderr  # the INFO lines, as the worker's
        try:
            logs.configure("INFO", "text")
            with scratch_database(args.db, tag="_loop") as url:
                cpu = run(url, args.n, args.tick)
        finally:
            sys.stderr = stderr
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{args.db}: {args.n} cancels, loop CPU {cpu * 1000 / args.n:.3f} ms per cancel "
        f"(load {load})"
    )


if __name__ == "__main__":
    main()
