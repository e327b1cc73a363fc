"""`orchestrator status --limit 0` over many batches: time and peak memory per format.

    .venv/bin/python -m bench.status_listing                  # 100,000 batches, SQLite
    .venv/bin/python -m bench.status_listing --batches 20000 --db postgres

A scratch database gets --batches tracked batches; then each format of `orchestrator
status -o FORMAT --limit 0` runs once, process start to exit, its output to /dev/null,
beside the raw limit in the same run: one Python process reading the same rows with the
driver alone (`SELECT * FROM batches`, each row `json.dumps`-ed as a line). Peak RSS is
each child's own. The rows stream from the database as they are printed,
so the peak should stay flat as the batches grow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import scratch_database
from orchestrator.clock import SystemClock
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database

FORMATS = ("ids", "jsonl", "json", "table")
RAW = """
import json, sys
url = sys.argv[1]
if url.startswith("sqlite"):
    import sqlite3
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    rows = conn.execute("SELECT * FROM batches")
else:
    import psycopg
    conn = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))
    rows = conn.cursor(name="all").execute("SELECT * FROM batches")
out = sys.stdout
for row in rows:
    out.write(json.dumps(row, default=str) + "\\n")
"""


# Runs the command and prints its peak RSS: from this small process, so the figure is the
# command's own, not a copy of the bench's memory made at fork.
LAUNCH = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child, its output thrown away."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, *command], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command} exited {done.returncode}: {done.stderr}")
    return seconds, int(done.stdout) / 1024


def fill(url: str, batches: int) -> None:
    db = Database.connect(url)
    now = SystemClock().now()
    store = BatchStore(db)
    ids = [f"batch_{n:024x}" for n in range(batches)]
    for start in range(0, batches, 10_000):
        store.track(ids[start : start + 10_000], now=now, source="track")
    db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=100_000)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    with scratch_database(args.db) as url:
        fill(url, args.batches)
        env = {**os.environ, "ORCHESTRATOR_DATABASE_URL": url, "NO_COLOR": "1"}
        orchestrator = str(Path(sys.executable).parent / "orchestrator")
        print(f"{args.batches:,} batches on {args.db}; load {os.getloadavg()[0]:.1f}")
        print(f"{'command':42} {'seconds':>8} {'peak RSS MB':>12}")
        raw_s, raw_mb = timed([sys.executable, "-c", RAW, url], env)
        print(f"{'raw: the driver, each row json.dumps-ed':42} {raw_s:>8.2f} {raw_mb:>12.1f}")
        for fmt in FORMATS:
            seconds, mb = timed([orchestrator, "status", "-o", fmt, "--limit", "0"], env)
            print(
                f"{'orchestrator status -o ' + fmt + ' --limit 0':42} {seconds:>8.2f} {mb:>12.1f}"
                f"   ({seconds / raw_s:.1f}x the raw time)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
