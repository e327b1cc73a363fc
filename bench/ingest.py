"""Ingestion benchmark: lines/s and peak RSS of storing one large result file.

    .venv/bin/python bench/ingest.py                      # SQLite and PostgreSQL, 1x and 4x
    .venv/bin/python bench/ingest.py --db sqlite --scales 1 --profile

A generated JSONL file (chat-completion lines of about --line-bytes each) is
served by a tiny local HTTP server in its own process, with Content-Length, the
way /v1/files/{id}/content is. Each run is a fresh subprocess (so peak RSS,
from resource.getrusage, is that run's own) against a freshly migrated database,
and ingests the file through the real client and ``FileIngest``.
PostgreSQL comes from ORCHESTRATOR_TEST_POSTGRES_URL (default: the local server).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get(
    "ORCHESTRATOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
FILE_ID = "file-bench"
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

        name = f"orch_bench_{os.getpid()}"
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
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    client.close()
    db.dispose()
    if cleanup is not None:
        cleanup()
    print(
        json.dumps(
            {
                "state": outcome.state.value,
                "lines": outcome.inserted + outcome.duplicates + outcome.malformed,
                "inserted": outcome.inserted,
                "seconds": elapsed,
                "cpu_seconds": cpu,
                "peak_rss_mb": peak_kb / 1024,
            }
        )
    )


# --- the driver ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or tempfile.gettempdir()) / "orchestrator-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
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
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--db",
                    db,
                    "--port",
                    str(port),
                    "--workdir",
                    str(workdir),
                    "--chunk-lines",
                    str(args.chunk_lines),
                ]
                if args.profile:
                    command.append("--profile")
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.stderr.write(done.stderr)
                    return 1
                if args.profile:
                    sys.stderr.write(done.stderr)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                assert result["state"] == "done" and result["inserted"] == lines, result
                rows.append((db, lines, size_mb, result["seconds"], result["peak_rss_mb"]))
                print(
                    f"{db:8} {lines:>8} lines {size_mb:7.1f} MB  {result['seconds']:6.2f} s  "
                    f"{lines / result['seconds']:>8,.0f} lines/s  "
                    f"{size_mb / result['seconds']:6.1f} MB/s  "
                    f"peak RSS {result['peak_rss_mb']:6.1f} MB  "
                    f"(ingest CPU {result['cpu_seconds']:.2f} s)",
                    flush=True,
                )
        finally:
            server.kill()
            server.wait()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    print(f"({stamp}, chunk {args.chunk_lines} lines, {os.cpu_count()} CPUs)")
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
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.child:
        child(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
