"""What a reconciler's claim costs among many due batches, with the claims' index
(next_poll_at, id) and, in the same run, with the index on next_poll_at alone that
schemas before migration 0012 had.

    .venv/bin/python -m bench.claims                        # SQLite and PostgreSQL
    .venv/bin/python -m bench.claims --db sqlite --batches 10000 --claims 200

Each arm: a fresh migrated database (``bench.harness.scratch_database``; on PostgreSQL
on ORCHESTRATOR_TEST_POSTGRES_URL's server), --batches in-flight batches all due at one
moment (batches tracked together fall due together: every claim breaks the tie on id),
ANALYZE, then --claims claims of --limit through ``PollStore.claim_due``, each its own
transaction, as a reconciler makes them. Prints wall and this process's CPU per claim
(on PostgreSQL the server's work shows in the wall time) and the ratio old / new.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import scratch_database  # noqa: E402
from orchestrator.clock import SystemClock  # noqa: E402
from orchestrator.db.batches import BatchStore  # noqa: E402
from orchestrator.db.database import Database  # noqa: E402
from orchestrator.db.engine import make_engine  # noqa: E402
from orchestrator.db.polls import PollStore  # noqa: E402

OLD_INDEX = "CREATE INDEX ix_batches_next_poll_at ON batches (next_poll_at)"
NEW_INDEX = "ix_batches_next_poll_at_id"


def measure(kind: str, arm: str, args: argparse.Namespace) -> tuple[float, float]:
    """(wall ms, CPU ms) per claim in this arm."""
    with scratch_database(kind, tag=f"_claims_{arm}") as url:
        if arm == "old":  # the schema before 0012
            engine = make_engine(url)
            with engine.begin() as connection:
                connection.execute(text(OLD_INDEX))
                connection.execute(text(f"DROP INDEX {NEW_INDEX}"))
            engine.dispose()
        db = Database.connect(url)
        try:
            now = SystemClock().now()
            ids = [f"batch_{n:08d}" for n in range(args.batches)]
            BatchStore(db).track(ids, now=now, source="track")
            with db.engine.begin() as connection:
                connection.execute(text("UPDATE batches SET status = 'in_progress'"))
                connection.execute(text("ANALYZE"))
            polls = PollStore(db)
            at = now + timedelta(seconds=1)
            started, cpu = time.perf_counter(), time.process_time()
            for claim in range(args.claims):
                taken = polls.claim_due(
                    now=at, owner=f"bench-{claim}", lease_seconds=600, limit=args.limit
                )
                assert len(taken) == args.limit, taken
            n = args.claims
            wall = (time.perf_counter() - started) * 1e3 / n
            return wall, (time.process_time() - cpu) * 1e3 / n
        finally:
            db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres, or both")
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--limit", type=int, default=4, help="batches a claim leases")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.batches} batches due at one moment; {args.claims} claims of {args.limit}")
    print("| database | index | wall ms per claim (median) | CPU ms per claim (median) |")
    print("|---|---|---|---|")
    for kind in args.db.split(","):
        seen: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            for arm in ("old", "new"):  # in turn: the host's load hits both alike
                seen[arm].append(measure(kind, arm, args))
        medians = {
            arm: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
            for arm, r in seen.items()
        }
        for arm, label in (("old", "next_poll_at"), ("new", "next_poll_at, id")):
            wall, cpu = medians[arm]
            print(f"| {kind} | {label} | {wall:.2f} | {cpu:.2f} |")
        print(
            f"{kind}: the claims' index takes {medians['old'][0] / medians['new'][0]:.1f}x less "
            f"wall time and {medians['old'][1] / medians['new'][1]:.1f}x less CPU a claim",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
