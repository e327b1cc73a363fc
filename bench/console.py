"""The console's server time at scale: 100,000 batches and 10 million result rows.

    .venv/bin/python -m bench.console                 # builds the dataset once, then measures
    .venv/bin/python -m bench.console --rebuild       # throw the dataset away and build it again
    .venv/bin/python -m bench.console --samples 200

The dataset lives in its own PostgreSQL database (`orchestrator_console_bench` on
ORCHESTRATOR_BENCH_POSTGRES_URL's server), made with server-side
``INSERT ... SELECT generate_series`` (a few minutes for 10M rows on two cores) and
kept for the next run: a finished build is marked in the database's comment.

Each page is requested in process (Starlette's TestClient) and timed by the
console's own Server-Timing header: the server's time from request to response
headers (the whole page is rendered by then). Beside it, the SQL that page view
sent (recorded from the engine) is replayed on a plain psycopg connection: that is
the floor, the time the database alone needs. Reported: p50 and p95 of both and
their ratio; the target is each page under 100 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from bench.harness import PG_URL, _migrate
from orchestrator.console.app import create_app
from orchestrator.db.database import Database

NAME = "orchestrator_console_bench"
BATCHES = 100_000
RESULTS_PER_BATCH = 100  # 10 million rows
DONE = f"console bench dataset: {BATCHES} batches x {RESULTS_PER_BATCH} results, complete"
CHUNK = 5_000  # batches per INSERT ... SELECT of results (500,000 rows)

STATUS_BY_REMAINDER = """CASE g % 20
    WHEN 0 THEN 'in_progress' WHEN 1 THEN 'in_progress' WHEN 2 THEN 'cancelling'
    WHEN 3 THEN 'cancelled' WHEN 4 THEN 'cancelled' WHEN 5 THEN 'cancelled'
    WHEN 6 THEN 'failed' WHEN 7 THEN 'expired' WHEN 8 THEN 'validating'
    WHEN 9 THEN 'finalizing' ELSE 'completed' END"""

BATCHES_SQL = f"""
INSERT INTO batches (
    id, endpoint, model, input_file_id, completion_window, status, output_file_id,
    created_at, in_progress_at, cancelling_at, cancelled_at, completed_at, expires_at,
    request_counts_total, request_counts_completed, request_counts_failed, metadata,
    tracked_at, tracked_by, status_changed_at, next_poll_at, polls, poll_failures,
    terminal_polls, harvest_state, harvested_at, results_stored, result_line_errors,
    overdue_since, version, updated_at)
SELECT
    'batch_bench_' || lpad(g::text, 6, '0'),
    '/v1/chat/completions',
    CASE WHEN g % 3 = 0 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END,
    'file-in-' || g, '24h', s.status, 'file-out-' || g,
    t.created, t.created + interval '1 minute',
    CASE WHEN s.status IN ('cancelling', 'cancelled') THEN t.created + interval '30 minutes' END,
    CASE WHEN s.status = 'cancelled' THEN t.created + interval '32 minutes' END,
    CASE WHEN s.status = 'completed' THEN t.created + interval '2 hours' END,
    t.created + interval '24 hours',
    {RESULTS_PER_BATCH}, {RESULTS_PER_BATCH} - g % 7, g % 7,
    jsonb_build_object('team', (ARRAY['search', 'ads', 'mail', 'maps', 'docs'])[g % 5 + 1],
                       'run', 'run-' || (g % 100)),
    t.created + interval '1 minute', 'sync', t.created + interval '40 minutes',
    CASE WHEN s.status IN ('in_progress', 'cancelling', 'validating', 'finalizing')
         THEN now() + interval '1 minute' END,
    3, 0, 0, 'done', t.created + interval '3 hours', {RESULTS_PER_BATCH}, 0,
    CASE WHEN s.status = 'cancelling' AND g % 100 = 2 THEN now() END,
    1, now()
FROM generate_series(1, {BATCHES}) AS g,
     LATERAL (SELECT now() - g * interval '30 seconds' AS created) AS t,
     LATERAL (SELECT {STATUS_BY_REMAINDER} AS status) AS s
"""

RESULTS_SQL = f"""
INSERT INTO batch_results (batch_id, custom_id, line_id, file_id, file_kind, line_number,
                           status_code, request_id, body, error_code, error_message)
SELECT 'batch_bench_' || lpad(b::text, 6, '0'), 'req-' || lpad(n::text, 5, '0'),
       'batch_req_' || b || '_' || n, 'file-out-' || b,
       CASE WHEN n %% 10 = 0 THEN 'error' ELSE 'output' END, n,
       CASE WHEN n %% 10 = 0 THEN NULL ELSE 200 END,
       CASE WHEN n %% 10 = 0 THEN NULL ELSE 'req_' || md5(b || '-' || n) END,
       CASE WHEN n %% 10 = 0 THEN NULL ELSE json_build_object(
           'id', 'chatcmpl-' || b || '-' || n, 'object', 'chat.completion',
           'choices', json_build_array(json_build_object(
               'index', 0, 'message', json_build_object(
                   'role', 'assistant', 'content', 'answer ' || n || ' of batch ' || b))),
           'usage', json_build_object('prompt_tokens', 20, 'completion_tokens', 9)) END,
       CASE WHEN n %% 10 = 0 THEN 'batch_cancelled' END,
       CASE WHEN n %% 10 = 0 THEN 'The batch was cancelled before this request executed.' END
FROM generate_series(%(first)s::int, %(last)s::int) AS b,
     generate_series(1, {RESULTS_PER_BATCH}) AS n
"""

REST_SQL = [
    f"""INSERT INTO result_files (file_id, batch_id, kind, state, lines_committed, results,
            malformed, duplicates, bytes, lines, sha256, attempts, started_at, done_at)
        SELECT output_file_id, id, 'output', 'done', {RESULTS_PER_BATCH}, {RESULTS_PER_BATCH},
               0, 0, 41000, {RESULTS_PER_BATCH}, md5(id) || md5(id), 1, harvested_at,
               harvested_at
        FROM batches""",
    """INSERT INTO cancel_requests (batch_id, requested_at, requested_by, reason, state,
            outcome, attempts, last_attempt_at, last_http_status, last_request_id,
            accepted_at, closed_at, terminal_status, seconds_to_terminal)
        SELECT id, created_at + interval '29 minutes', 'bench', 'budget',
               CASE WHEN status = 'cancelling' THEN 'accepted' ELSE 'closed' END,
               CASE WHEN status = 'cancelled' THEN 'cancelled'
                    WHEN status = 'completed' THEN 'too_late:completed' END,
               1, created_at + interval '30 minutes', 200, 'req_cancel_' || md5(id),
               created_at + interval '30 minutes',
               CASE WHEN status <> 'cancelling' THEN created_at + interval '33 minutes' END,
               CASE WHEN status <> 'cancelling' THEN status END,
               CASE WHEN status <> 'cancelling' THEN 240.0 END
        FROM batches
        WHERE status IN ('cancelling', 'cancelled')
           OR (status = 'completed' AND right(id, 1) = '1')""",
    """INSERT INTO cancel_attempts (batch_id, attempt, worker, started_at, finished_at,
            http_status, request_id, outcome)
        SELECT batch_id, 1, 'worker-bench', last_attempt_at,
               last_attempt_at + interval '80 milliseconds', 200, last_request_id, 'accepted'
        FROM cancel_requests""",
    """INSERT INTO batch_events (batch_id, kind, from_status, to_status, server_at,
            recorded_at, source, detail)
        SELECT id, 'tracked', NULL, NULL, NULL, tracked_at, 'sync', 'tracked by sync'
        FROM batches
        UNION ALL
        SELECT id, 'status', NULL, 'in_progress', in_progress_at, tracked_at, 'sync', NULL
        FROM batches
        UNION ALL
        SELECT id, 'status', 'in_progress', status, status_changed_at, status_changed_at,
               'reconciler', NULL
        FROM batches WHERE status <> 'in_progress'
        ORDER BY 6""",
]


def admin_url() -> str:
    return make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)


def bench_url(driver: str = "postgresql+psycopg") -> str:
    url = make_url(PG_URL).set(drivername=driver, database=NAME)
    return url.render_as_string(hide_password=False)


def dataset_ready() -> bool:
    with psycopg.connect(admin_url(), autocommit=True) as admin:
        row = admin.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (NAME,),
        ).fetchone()
    return row is not None and row[0] == DONE


def build() -> None:
    """The dataset from nothing: a new database, migrated, filled on the server."""
    started = time.perf_counter()
    with psycopg.connect(admin_url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{NAME}"')
    _migrate(bench_url())
    with psycopg.connect(bench_url("postgresql"), autocommit=True) as conn:
        conn.execute(BATCHES_SQL)
        print(f"  {BATCHES:,} batches ({time.perf_counter() - started:.0f} s)", flush=True)
        for first in range(1, BATCHES + 1, CHUNK):
            last = min(BATCHES, first + CHUNK - 1)
            conn.execute(RESULTS_SQL, {"first": first, "last": last})
            done = last * RESULTS_PER_BATCH
            print(f"  {done:,} results ({time.perf_counter() - started:.0f} s)", flush=True)
        for statement in REST_SQL:
            conn.execute(statement)
        conn.execute("VACUUM ANALYZE")
    with psycopg.connect(admin_url(), autocommit=True) as admin:
        admin.execute(f"COMMENT ON DATABASE \"{NAME}\" IS '{DONE}'")
    print(f"dataset built in {time.perf_counter() - started:.0f} s", flush=True)


class Recorder:
    """The SQL statements an engine sends, for replaying them raw."""

    def __init__(self, db: Database) -> None:
        self.sent: list[tuple[str, Any]] = []
        event.listen(db.engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        self.sent.append((statement, params))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def server_ms(answer: Any) -> float:
    found = re.search(r"app;dur=([0-9.]+)", answer.headers["server-timing"])
    assert found is not None and answer.status_code == 200, answer.status_code
    return float(found.group(1))


def measure(
    client: TestClient,
    recorder: Recorder,
    raw: psycopg.Connection[Any],
    paths: Callable[[], str],
    samples: int,
) -> tuple[list[float], list[float], list[float]]:
    """Per request: the server's time, this process's CPU time, the page's SQL alone."""
    page_ms: list[float] = []
    cpu_ms: list[float] = []
    sql_ms: list[float] = []
    for _ in range(samples):
        recorder.sent.clear()
        cpu = time.process_time()
        page_ms.append(server_ms(client.get(paths())))
        cpu_ms.append((time.process_time() - cpu) * 1000)
        statements = list(recorder.sent)
        start = time.perf_counter()
        with raw.transaction(), raw.cursor() as cursor:
            for statement, params in statements:
                cursor.execute(statement, params)
                cursor.fetchall()
        sql_ms.append((time.perf_counter() - start) * 1000)
    return page_ms, cpu_ms, sql_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="build the dataset again")
    parser.add_argument("--samples", type=int, default=100, help="requests per page")
    args = parser.parse_args()
    if args.rebuild or not dataset_ready():
        print(f"building {NAME} (once; kept for later runs)", flush=True)
        build()
    db = Database.connect(bench_url(), pool_size=2, read_only=True)
    recorder = Recorder(db)
    picks = random.Random(15)
    with psycopg.connect(bench_url("postgresql")) as raw:
        middle = raw.execute(
            "SELECT id FROM batches ORDER BY coalesce(created_at, tracked_at) DESC, id DESC "
            "OFFSET 50000 LIMIT 1"
        ).fetchone()
    assert middle is not None
    client = TestClient(create_app(db, token=None), base_url="http://127.0.0.1")
    deep = client.get(f"/batches/{middle[0]}").status_code  # warms, and checks the id exists
    assert deep == 200
    # Page 1001 of the newest-first list: the cursor is the row 50,000 rows down.
    from orchestrator.db.browse import encode_cursor

    with psycopg.connect(bench_url("postgresql")) as raw:
        created = raw.execute(
            "SELECT coalesce(created_at, tracked_at) FROM batches WHERE id = %s", middle
        ).fetchone()
    assert created is not None
    cursor = encode_cursor(created[0], middle[0])
    pages: dict[str, Callable[[], str]] = {
        "list, newest first (page 1)": lambda: "/batches",
        "list, page 1,001 (keyset)": lambda: f"/batches?after={cursor}",
        "list, status=cancelling": lambda: "/batches?status=cancelling",
        "list, metadata team=ads, oldest": lambda: "/batches?metadata=team%3Dads&sort=oldest",
        "batch page (random batch)": lambda: (
            f"/batches/batch_bench_{picks.randint(1, BATCHES):06d}"
        ),
        "overview": lambda: "/",
    }
    print(
        f"\n{BATCHES:,} batches, {BATCHES * RESULTS_PER_BATCH:,} result rows; "
        f"{args.samples} requests per page (after 5 to warm up)\n"
    )
    print(
        f"{'page':<34} {'server p50':>10} {'p95':>8} {'CPU p50':>8} "
        f"{'raw SQL p50':>12} {'p95':>8} {'ratio':>6}"
    )
    with psycopg.connect(bench_url("postgresql")) as raw:
        for name, path in pages.items():
            measure(client, recorder, raw, path, 5)
            page_ms, cpu_ms, sql_ms = measure(client, recorder, raw, path, args.samples)
            p50, p95 = statistics.median(page_ms), percentile(page_ms, 0.95)
            s50, s95 = statistics.median(sql_ms), percentile(sql_ms, 0.95)
            print(
                f"{name:<34} {p50:>8.1f}ms {p95:>6.1f}ms {statistics.median(cpu_ms):>6.1f}ms "
                f"{s50:>10.1f}ms {s95:>6.1f}ms {p50 / s50:>5.2f}x"
            )
    load = os.getloadavg()[0]
    print(f"\nload average during the run: {load:.1f} on {os.cpu_count()} cores")
    client.close()
    db.dispose()


if __name__ == "__main__":
    main()
