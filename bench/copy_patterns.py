"""PostgreSQL's side of ingestion alone: what each way of COPYing the same rows costs
the server, with no client work to compete with it.

    .venv/bin/python -m bench.copy_patterns                 # 50k lines, 3 rounds
    .venv/bin/python -m bench.copy_patterns --lines 200000 --rounds 5

The rows of ``bench/ingest.py``'s generated file (made if missing) are built in memory
first, as the raw arm builds them; then, each pattern against a fresh copy of a migrated
database and right after a CHECKPOINT, they are stored by a binary COPY:

- ``one COPY``: every row in one COPY and one transaction (the raw arm of ingest.py);
- ``chunks N``: N rows a transaction, each with ``synchronous_commit`` off, one after
  another on one connection (the project with one lane);
- ``two lanes N``: the same chunks on two connections in turn, a chunk committing on
  its own thread while the next one streams on the other connection (the project's
  PostgreSQL pattern, ``processes/lanes.py``).

It prints the wall time and the CPU the backends spent. When the backends spend the
same in every pattern, what the ingestion benchmark shows above the raw arm is not the
chunks' cost but the client's work sharing the cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import PG_URL, _cpu_of, make_file  # noqa: E402
from orchestrator.core.result_lines import RESULT_COLUMNS  # noqa: E402
from orchestrator.db.results import pg_copy_types  # noqa: E402

Row = tuple[Any, ...]
_COPY = f"COPY batch_results ({', '.join(RESULT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"


def rows_of(path: Path, lines: int) -> list[Row]:
    """The file's first ``lines`` rows, built as the raw arm builds them."""
    rows: list[Row] = []
    with path.open("rb") as source:
        for number, line in enumerate(source, 1):
            if number > lines:
                break
            record = orjson.loads(line)
            response = record["response"]
            rows.append(
                (
                    "batch_bench",
                    record["custom_id"],
                    record["id"],
                    "file-bench",
                    "output",
                    number,
                    response["status_code"],
                    response["request_id"],
                    orjson.dumps(response["body"]).decode(),
                    None,
                    None,
                )
            )
    return rows


class Server:
    """A migrated template database, and a fresh copy of it for each run."""

    def __init__(self) -> None:
        prefix = os.environ.get("ORCHESTRATOR_BENCH_DB_PREFIX", "orch_bench")
        self.template = f"{prefix}_copy_tmpl_{os.getpid()}"
        self.database = f"{prefix}_copy_{os.getpid()}"
        self.admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(False)
        self.url = make_url(self.admin).set(database=self.database).render_as_string(False)
        self.types = ["text" if kind == "json" else kind for kind in pg_copy_types()]

    def __enter__(self) -> Server:
        from orchestrator.db import migrate
        from orchestrator.db.engine import make_engine

        self._admin(
            f'DROP DATABASE IF EXISTS "{self.template}"', f'CREATE DATABASE "{self.template}"'
        )
        engine = make_engine(make_url(PG_URL).set(database=self.template).render_as_string(False))
        migrate.upgrade(engine)
        engine.dispose()
        return self

    def __exit__(self, *_: object) -> None:
        self._admin(
            f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)',
            f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)',
        )

    def fresh(self) -> None:
        self._admin(
            f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)',
            f'CREATE DATABASE "{self.database}" TEMPLATE "{self.template}"',
            "CHECKPOINT",
        )

    def _admin(self, *statements: str) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def copy(self, conn: psycopg.Connection[Any], rows: list[Row]) -> None:
        with conn.cursor() as cursor, cursor.copy(_COPY) as copy:
            copy.set_types(self.types)
            for row in rows:
                copy.write_row(row)


def one_copy(server: Server, conns: list[psycopg.Connection[Any]], rows: list[Row], _: int) -> None:
    server.copy(conns[0], rows)
    conns[0].commit()


def chunks(
    server: Server, conns: list[psycopg.Connection[Any]], rows: list[Row], size: int
) -> None:
    for start in range(0, len(rows), size):
        conns[0].execute("SET LOCAL synchronous_commit TO OFF")
        server.copy(conns[0], rows[start : start + size])
        conns[0].commit()


def two_lanes(
    server: Server, conns: list[psycopg.Connection[Any]], rows: list[Row], size: int
) -> None:
    committing: dict[int, threading.Thread] = {}  # a lane's commit under way
    for index, start in enumerate(range(0, len(rows), size)):
        lane = index % 2
        if lane in committing:
            committing.pop(lane).join()
        conn = conns[lane]
        conn.execute("SET LOCAL synchronous_commit TO OFF")
        server.copy(conn, rows[start : start + size])
        committing[lane] = threading.Thread(target=conn.commit)
        committing[lane].start()
    for thread in committing.values():
        thread.join()


PATTERNS = {"one COPY": (one_copy, 1), "chunks": (chunks, 1), "two lanes": (two_lanes, 2)}


def measure(server: Server, pattern: str, rows: list[Row], size: int) -> tuple[float, float]:
    """(wall seconds, backends' CPU seconds) of storing ``rows`` in ``pattern``."""
    run, connections = PATTERNS[pattern]
    server.fresh()
    conns = [psycopg.connect(server.url) for _ in range(connections)]
    try:
        pids = [conn.info.backend_pid for conn in conns]
        cpu_before = _cpu_of(pids)
        started = time.perf_counter()
        run(server, conns, rows, size)
        return time.perf_counter() - started, _cpu_of(pids) - cpu_before
    finally:
        for conn in conns:
            conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--line-bytes", type=int, default=2_000)
    parser.add_argument("--chunk-lines", default="2000,10000", help="chunk sizes to try")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.gettempdir()) / "orchestrator-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"output-{args.lines}x{args.line_bytes}.jsonl"
    make_file(path, args.lines, args.line_bytes)
    rows = rows_of(path, args.lines)
    sizes = [int(size) for size in args.chunk_lines.split(",")]
    runs = [("one COPY", len(rows))]
    runs += [("chunks", size) for size in sizes] + [("two lanes", size) for size in sizes]
    seen: dict[str, list[tuple[float, float]]] = {}
    print(f"{len(rows)} rows built in memory; {args.rounds} rounds, patterns in turn")
    with Server() as server:
        for _ in range(args.rounds):
            for pattern, size in runs:
                label = pattern if pattern == "one COPY" else f"{pattern} {size}"
                wall, cpu = measure(server, pattern, rows, size)
                seen.setdefault(label, []).append((wall, cpu))
                print(f"  {label:16} wall {wall:6.3f} s  backends' CPU {cpu:5.2f} s", flush=True)
    print("| pattern | wall s (median) | backends' CPU s (median) |\n|---|---|---|")
    for label, results in seen.items():
        wall = statistics.median(w for w, _ in results)
        cpu = statistics.median(c for _, c in results)
        print(f"| {label} | {wall:.3f} | {cpu:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
