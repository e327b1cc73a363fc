"""Ingestion benchmark: the project's end to end beside the raw serial limit, in one run.

    .venv/bin/python bench/ingest.py                      # SQLite and PostgreSQL, 1x and 4x
    .venv/bin/python bench/ingest.py --db sqlite --scales 1 --profile

A generated JSONL file (chat-completion lines of about --line-bytes each) is
served by a tiny local HTTP server in its own process, with Content-Length, the
way /v1/files/{id}/content is. Each run is a fresh subprocess (so peak RSS,
from resource.getrusage, is that run's own) against a freshly migrated database.

- project: the file downloaded through the real ``BatchApiClient`` and stored by
  ``FileIngest`` (checkpoints, leases, validation, everything);
- raw: the serial limit for the same rows, one thread, no HTTP: the file read
  from the local disk, each line ``orjson.loads``-ed into the same row tuple
  (its body written back with ``orjson.dumps``), then on SQLite plain
  ``sqlite3`` ``executemany`` (the engine's pragmas: WAL, synchronous NORMAL,
  a transaction per ``--chunk-lines``), on PostgreSQL a plain psycopg binary
  ``COPY`` of all rows in one transaction, each written as it is parsed (binary,
  as the project's: the fastest serial COPY).

The two alternate, in turn first in a pair (project first in the first pair),
so the host's load hits them alike; each run starts after ``sync`` (the kernel's
dirty pages written: the generated file's 400 MB, or what the run before wrote,
would otherwise be written back during the next run, always the project's in
the first pair) and on PostgreSQL right after a CHECKPOINT, and after two raw runs
of the size that are not measured (otherwise the first runs pay for creating the WAL
segments the rest recycle: ``WARM_UP_RUNS``); the ratio is raw time / project time
(1.00x: as fast as the limit). With ``--repeat`` above 1 each size also gets the
median of its pairs' ratios: on a shared host the raw arm alone varies by a third
from one run to the next.
PostgreSQL comes from ORCHESTRATOR_TEST_POSTGRES_URL (default: the local server).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get(
    "ORCHESTRATOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
FILE_ID = "file-bench"
# Raw runs before a size's first pair on PostgreSQL, not measured. The server keeps as
# many WAL segments as its recent checkpoints needed: after the 50k runs, too few for a
# 200k one, whose first run created (and zero-filled) the rest. That run was always the
# project's (its backends spent 2.59 s of CPU against 1.86 s in the pairs after), the
# second pair's raw run paid for a few more, and the estimate took about two runs to grow.
WARM_UP_RUNS = 2
KEY = "sk-bench"


# --- the file -----------------------------------------------------------------------------


def _line(index: int, line_bytes: int) -> bytes:
    record: dict[str, Any] = {
        "id": f"batch_req_{index:024x}",
        "custom_id": f"request-{index}",
        "response": {
            "status_code": 200,
            "request_id": f"req_{index:028x}",
            "body": {
                "id": f"chatcmpl-{index:020d}",
                "object": "chat.completion",
                "created": 1_774_437_191 + index,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "", "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 42, "completion_tokens": 400, "total_tokens": 442},
                "system_fingerprint": "fp_bench",
            },
        },
        "error": None,
    }
    pad = max(16, line_bytes - len(orjson.dumps(record)) - 1)
    words = "the batch was cancelled but every paid-for answer is kept safe "
    content = (words * (pad // len(words) + 1))[:pad]
    record["response"]["body"]["choices"][0]["message"]["content"] = content
    return orjson.dumps(record) + b"\n"


def make_file(path: Path, lines: int, line_bytes: int) -> None:
    if path.exists():
        return
    partial = path.with_suffix(".part")
    with partial.open("wb") as out:
        for index in range(lines):
            out.write(_line(index, line_bytes))
    partial.rename(path)


# --- the server ---------------------------------------------------------------------------


def serve(path: Path) -> None:
    """Serve ``path`` as every file's content until killed; print the port first."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with path.open("rb") as source:
                while block := source.read(1 << 20):
                    self.wfile.write(block)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(httpd.server_port, flush=True)
    httpd.serve_forever()


# --- one run (in its own process) ---------------------------------------------------------


def fresh_database(kind: str, workdir: Path) -> tuple[str, Any]:
    from orchestrator.db import migrate
    from orchestrator.db.engine import make_engine

    if kind == "sqlite":
        url = f"sqlite:///{workdir / f'bench-{os.getpid()}.sqlite3'}"
        cleanup: Any = None
    else:
        import psycopg
        from sqlalchemy.engine import make_url

        # ORCHESTRATOR_BENCH_DB_PREFIX: a name of one's own on a server others clean up too
        prefix = os.environ.get("ORCHESTRATOR_BENCH_DB_PREFIX", "orch_bench")
        name = f"{prefix}_{os.getpid()}"
        admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(False)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = make_url(PG_URL).set(database=name).render_as_string(False)

        def cleanup() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url, cleanup


def server_cpu(url: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to ``url``'s database
    (this run's own connections: the database is fresh); 0 for SQLite (in process)."""
    if not url.startswith("postgresql"):
        return 0.0
    import psycopg
    from sqlalchemy.engine import make_url

    plain = make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(plain, autocommit=True) as conn:
        me = conn.info.backend_pid
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            )
            if pid != me
        ]
    return _cpu_of(pids)


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds (user and system) of these processes so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # another host, or gone
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def child(args: argparse.Namespace) -> None:
    import logging

    logging.disable(logging.WARNING)
    from orchestrator.api.client import ApiSettings, BatchApiClient
    from orchestrator.clock import SystemClock
    from orchestrator.core.retry_policy import RetryPolicy
    from orchestrator.db.batches import BatchStore
    from orchestrator.db.database import Database
    from orchestrator.db.polls import PollStore
    from orchestrator.db.results import ResultStore
    from orchestrator.processes.ingest import FileIngest, IngestSettings
    from orchestrator.secret import Secret

    url, cleanup = fresh_database(args.db, Path(args.workdir))
    db = Database.connect(url)
    clock = SystemClock()
    now = clock.now()
    BatchStore(db).track(["batch_bench"], now=now, source="track")
    claims = PollStore(db).claim_due(now=now, owner="bench", lease_seconds=600, limit=1)
    assert [c.batch_id for c in claims] == ["batch_bench"]
    api = ApiSettings(api_key=Secret(KEY), base_url=f"http://127.0.0.1:{args.port}/v1")
    client = BatchApiClient(api, policy=RetryPolicy())
    ingest = FileIngest(
        client=client,
        results=ResultStore(db),
        clock=clock,
        owner="bench",
        settings=IngestSettings(chunk_lines=args.chunk_lines, lease_seconds=600),
    )
    profiler: Any = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    started = time.perf_counter()
    cpu_before = time.process_time()
    outcome = ingest.run(batch_id="batch_bench", file_id=FILE_ID, kind="output")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    if profiler is not None:
        profiler.stop()
        sys.stderr.write(profiler.output_text(unicode=False, color=False, show_all=False))
    server = server_cpu(url)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    client.close()
    db.dispose()
    if cleanup is not None:
        cleanup()
    _remove_sqlite(args.db, url)
    print(
        json.dumps(
            {
                "state": outcome.state.value,
                "lines": outcome.inserted + outcome.duplicates + outcome.malformed,
                "inserted": outcome.inserted,
                "seconds": elapsed,
                "cpu_seconds": cpu,
                "server_cpu_seconds": server,
                "peak_rss_mb": peak_kb / 1024,
            }
        )
    )


def _remove_sqlite(kind: str, url: str) -> None:
    if kind == "sqlite":
        database = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            Path(database + suffix).unlink(missing_ok=True)


def _raw_rows(path: Path, chunk_lines: int) -> Iterator[list[tuple[Any, ...]]]:
    """The file's rows, ``chunk_lines`` lines at a time."""
    rows = _raw_row_stream(path)
    while chunk := list(islice(rows, chunk_lines)):
        yield chunk


def _raw_row_stream(path: Path) -> Iterator[tuple[Any, ...]]:
    """The file's rows, one by one: parse, pick, write the body back."""
    loads, dumps = orjson.loads, orjson.dumps
    with path.open("rb") as source:
        for number, line in enumerate(source, 1):
            record = loads(line)
            response = record.get("response") or {}
            error = record.get("error") or {}
            body = response.get("body")
            yield (
                "batch_bench",
                record["custom_id"],
                record.get("id"),
                FILE_ID,
                "output",
                number,
                response.get("status_code"),
                response.get("request_id"),
                None if body is None else dumps(body).decode(),
                error.get("code"),
                error.get("message"),
            )


def _raw_sqlite(url: str, path: Path, chunk_lines: int, columns: str) -> tuple[int, float]:
    import sqlite3

    database = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")  # as orchestrator.db.engine opens it
    conn.execute("PRAGMA synchronous=NORMAL")
    insert = (
        f"INSERT INTO batch_results ({columns}) VALUES "
        f"({', '.join('?' for _ in columns.split(','))}) ON CONFLICT DO NOTHING"
    )
    stored = 0
    for rows in _raw_rows(path, chunk_lines):
        conn.execute("BEGIN IMMEDIATE")
        stored += conn.executemany(insert, rows).rowcount
        conn.execute("COMMIT")
    conn.close()
    return stored, 0.0


def _raw_postgres(url: str, path: Path, chunk_lines: int, columns: str) -> tuple[int, float]:
    import psycopg

    from orchestrator.db.results import pg_copy_types

    # binary, as the project sends: the fastest serial COPY (a text one costs both sides
    # more CPU); a body str sent as text is json's binary form
    types = ["text" if kind == "json" else kind for kind in pg_copy_types()]
    stored = 0
    with psycopg.connect(url) as conn:
        with (
            conn.cursor() as cursor,
            cursor.copy(f"COPY batch_results ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(types)
            for row in _raw_row_stream(path):  # one COPY: nothing to group
                copy.write_row(row)
                stored += 1
        conn.commit()
        server = _cpu_of([conn.info.backend_pid])
    return stored, server


def raw_child(args: argparse.Namespace) -> None:
    """The serial limit: the same rows, one thread, the driver alone."""
    from orchestrator.core.result_lines import RESULT_COLUMNS

    url, cleanup = fresh_database(args.db, Path(args.workdir))
    columns = ", ".join(RESULT_COLUMNS)
    store = _raw_sqlite if args.db == "sqlite" else _raw_postgres
    started = time.perf_counter()
    cpu_before = time.process_time()
    stored, server = store(url, Path(args.file), args.chunk_lines, columns)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cleanup is not None:
        cleanup()
    _remove_sqlite(args.db, url)
    print(
        json.dumps(
            {
                "state": "done",
                "lines": stored,
                "inserted": stored,
                "seconds": elapsed,
                "cpu_seconds": cpu,
                "server_cpu_seconds": server,
                "peak_rss_mb": peak_kb / 1024,
            }
        )
    )


# --- the driver ---------------------------------------------------------------------------


def _child(args: argparse.Namespace, mode: str, db: str, port: int, path: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--db",
        db,
        "--port",
        str(port),
        "--file",
        str(path),
        "--workdir",
        str(args.workdir),
        "--chunk-lines",
        str(args.chunk_lines),
    ]
    if args.profile and mode == "project":
        command.append("--profile")
    os.sync()  # the file's pages, and those the run before dirtied: no run pays another's
    if db == "postgres":
        _checkpoint()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(1)
    if args.profile:
        sys.stderr.write(done.stderr)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _checkpoint() -> None:
    """Start each run right after a checkpoint: the WAL the run before wrote is flushed
    and its segments recycled, so no run pays for another's."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or tempfile.gettempdir()) / "orchestrator-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = str(workdir)
    print(f"load average at the start: {_load()}", flush=True)
    print(
        f"{'database':10} {'lines':>8} {'MB':>6} | {'project s':>9} {'lines/s':>8} "
        f"{'CPU s':>6} {'srv s':>6} {'RSS MB':>7} | {'raw s':>6} {'lines/s':>8} {'CPU s':>6} "
        f"{'srv s':>6} {'RSS MB':>7} | {'ratio':>6}",
        flush=True,
    )
    for scale in [int(s) for s in args.scales.split(",")]:
        lines = args.lines * scale
        path = workdir / f"output-{lines}x{args.line_bytes}.jsonl"
        make_file(path, lines, args.line_bytes)
        size_mb = path.stat().st_size / 1e6
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            for db in args.db.split(","):
                if db == "postgres":  # unmeasured: see WARM_UP_RUNS
                    for _ in range(WARM_UP_RUNS):
                        _child(args, "raw", db, port, path)
                ratios: list[float] = []
                for pair in range(args.repeat):
                    arms = ("project", "raw") if pair % 2 == 0 else ("raw", "project")
                    ran = {arm: _child(args, arm, db, port, path) for arm in arms}
                    ours, raw = ran["project"], ran["raw"]
                    assert ours["state"] == "done" and ours["inserted"] == lines, ours
                    assert raw["inserted"] == lines, raw
                    print(
                        f"{db:10} {lines:>8} {size_mb:>6.1f} | {ours['seconds']:>9.2f} "
                        f"{lines / ours['seconds']:>8,.0f} {ours['cpu_seconds']:>6.2f} "
                        f"{ours['server_cpu_seconds']:>6.2f} "
                        f"{ours['peak_rss_mb']:>7.1f} | {raw['seconds']:>6.2f} "
                        f"{lines / raw['seconds']:>8,.0f} {raw['cpu_seconds']:>6.2f} "
                        f"{raw['server_cpu_seconds']:>6.2f} "
                        f"{raw['peak_rss_mb']:>7.1f} | "
                        f"{raw['seconds'] / ours['seconds']:>5.2f}x  (load {_load()})",
                        flush=True,
                    )
                    ratios.append(raw["seconds"] / ours["seconds"])
                if len(ratios) > 1:  # one pair is at the mercy of a noisy host's second
                    print(
                        f"{db:10} {lines:>8} median ratio of {len(ratios)} pairs: "
                        f"{statistics.median(ratios):.2f}x (from {min(ratios):.2f}x "
                        f"to {max(ratios):.2f}x)",
                        flush=True,
                    )
        finally:
            server.kill()
            server.wait()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"({stamp}, chunk {args.chunk_lines} lines, {os.cpu_count()} CPUs; "
        f"ratio = raw time / project time; load average at the end: {_load()})"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres, or both")
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--line-bytes", type=int, default=2_000)
    parser.add_argument("--scales", default="1,4", help="file sizes, as multiples of --lines")
    parser.add_argument("--chunk-lines", type=int, default=2000)
    parser.add_argument("--workdir", default="")
    parser.add_argument("--profile", action="store_true", help="pyinstrument report on stderr")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each pair per size")
    parser.add_argument("--child", choices=("project", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.child == "project":
        child(args)
        return 0
    if args.child == "raw":
        raw_child(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
