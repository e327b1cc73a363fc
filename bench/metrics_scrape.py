"""What a Prometheus scrape of ``/metrics`` costs at scale: every process serves one,
and each scrape runs ``DatabaseCollector.collect``'s counts over the whole fleet.

    .venv/bin/python -m bench.metrics_scrape                    # SQLite and PostgreSQL
    .venv/bin/python -m bench.metrics_scrape --db postgres --batches 1000000 --scrapes 5

Each size: a fresh migrated database (``bench.harness.scratch_database``: on PostgreSQL
one on ORCHESTRATOR_TEST_POSTGRES_URL's server, dropped after), seeded in plain SQL
(generate_series / a recursive CTE) with a fleet as it looks after a while: of --batches
batches 75 % terminal and harvested (results_stored set, an output file done with its
bytes, one in ten an error file too, a third of the outputs queued for deletion), 4 %
terminal with the harvest pending, retrying or missing, 14 % in flight (0.4 % of all
overdue), 2 % never observed; a cancel request for one batch in five and for the
cancelling and unobserved ones (closed, pending, accepted, failed, withdrawn); a pause that
has ended. Then ANALYZE (PostgreSQL: VACUUM ANALYZE, as autovacuum leaves a table that
has settled). ``batch_results`` stays empty: no scrape reads it.

The scrape is served as a process serves it (``Metrics.for_database`` and
``serve_metrics``: the WSGI server in its thread) and fetched with httpx, one warm-up,
then --scrapes timed GETs. Beside each GET, in turn, the raw limit: the very statements
that scrape ran (caught with SQLAlchemy's ``before_cursor_execute``), run again on one
connection of the bare driver (sqlite3 / psycopg), fetched, and nothing else. Then
--scrapes more, 250 ms apart, with a writer beside them, as a worker writes (a one-row
update in a transaction of its own every 5 ms: what waits for a scrape's locks). Prints the median
wall ms of scrape and raw, their ratio, this process's CPU ms per scrape (the server's
work on PostgreSQL is not in it), the writer's median and longest transaction, the raw
ms of each statement, and, timed in turn with the raw runs, the two statements that
counted harvests before (``OLD_UPKEEP``) against the one this checkout runs.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import scratch_database  # noqa: E402
from orchestrator.db.database import Database  # noqa: E402
from orchestrator.metrics import Metrics, serve_metrics  # noqa: E402
from orchestrator.settings import Settings  # noqa: E402

# What upkeep_snapshot ran before it read batches once (and every scrape ran it): the
# count of each harvest state by GROUP BY, then the oldest waiting end in a second scan.
_ENDED = "coalesce(completed_at, cancelled_at, expired_at, failed_at, status_changed_at)"
OLD_UPKEEP = (
    "SELECT harvest_state, count(*) FROM batches GROUP BY harvest_state",
    f"SELECT min({_ENDED}) FROM batches WHERE harvest_state IN ('pending', 'retrying')",
)

# --- the fleet, in SQL both databases run (the dialect's bits passed in) -------------


@dataclass(frozen=True)
class Dialect:
    numbers: str  # a CTE "nums(i)" of 1..:n
    ident: Callable[[str], str]  # 'batch_00000042' from the number
    ago: Callable[[str], str]  # a timestamp, that many seconds before now
    param: str  # the driver's placeholder for :n


SQLITE = Dialect(
    numbers="WITH RECURSIVE nums(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM nums WHERE i < ?)",
    ident=lambda i: f"printf('batch_%08d', {i})",
    ago=lambda s: f"(strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+d seconds', -({s}))) || '000')",
    param="?",
)
POSTGRES = Dialect(
    numbers="WITH nums(i) AS (SELECT generate_series(1, %s::bigint))",
    ident=lambda i: f"('batch_' || lpad(({i})::text, 8, '0'))",
    ago=lambda s: f"(now() - ({s}) * interval '1 second')",
    param="%s",
)


def seed_statements(d: Dialect) -> list[str]:
    """INSERT ... SELECT statements, each taking the number of batches once."""
    ended = d.ago("3600 + (i * 37) % 2592000")
    terminal = "b < 84"
    status = (
        "CASE WHEN b < 60 OR b BETWEEN 80 AND 83 THEN 'completed' WHEN b < 70 THEN 'cancelled' "
        "WHEN b < 75 THEN 'expired' WHEN b < 80 THEN 'failed' WHEN b < 94 THEN 'in_progress' "
        "WHEN b < 96 THEN 'validating' WHEN b = 96 THEN 'finalizing' WHEN b = 97 "
        "THEN 'cancelling' END"
    )
    harvest = (
        "CASE WHEN b IN (80, 81) THEN 'pending' WHEN b = 82 THEN 'missing' WHEN b = 83 "
        f"THEN 'retrying' WHEN {terminal} THEN 'done' ELSE 'waiting' END"
    )
    has_output = "(b < 75 OR b BETWEEN 80 AND 83)"
    batches = f"""
        {d.numbers}
        INSERT INTO batches (
            id, endpoint, model, input_file_id, completion_window, status, output_file_id,
            error_file_id, created_at, in_progress_at, finalizing_at, completed_at, failed_at,
            expired_at, cancelling_at, cancelled_at, request_counts_total,
            request_counts_completed, request_counts_failed, tracked_at, tracked_by,
            status_changed_at, last_polled_at, next_poll_at, polls, poll_failures,
            terminal_polls, harvest_state, harvested_at, results_stored, result_line_errors,
            overdue_since, version, updated_at)
        SELECT {d.ident("i")}, '/v1/chat/completions', 'gpt-4o-mini', 'file-in-' || i, '24h',
            {status},
            CASE WHEN {has_output} THEN 'file-out-' || i END,
            CASE WHEN {has_output} AND i % 10 = 0 THEN 'file-err-' || i END,
            {d.ago("90000 + (i * 37) % 2592000")},
            CASE WHEN b < 94 AND b NOT BETWEEN 75 AND 79 OR b >= 96 AND b < 98
                THEN {d.ago("89000 + (i * 37) % 2592000")} END,
            CASE WHEN b = 96 OR b < 60 OR b BETWEEN 80 AND 83 THEN {ended} END,
            CASE WHEN b < 60 OR b BETWEEN 80 AND 83 THEN {ended} END,
            CASE WHEN b BETWEEN 75 AND 79 THEN {ended} END,
            CASE WHEN b BETWEEN 70 AND 74 THEN {ended} END,
            CASE WHEN b BETWEEN 60 AND 69 OR b = 97 THEN {ended} END,
            CASE WHEN b BETWEEN 60 AND 69 THEN {ended} END,
            CASE WHEN b < 98 THEN 100 + i % 900 END,
            CASE WHEN b < 98 THEN 90 + i % 800 END,
            CASE WHEN b < 98 THEN i % 10 END,
            {d.ago("91000 + (i * 37) % 2592000")}, CASE WHEN i % 5 = 0 THEN 'cancel' ELSE
                'sync' END,
            {ended}, {d.ago("i % 600")},
            CASE WHEN NOT ({terminal}) OR b IN (80, 81, 83) THEN {d.ago("-(i % 60)")} END,
            5 + i % 40, 0, 0, {harvest},
            CASE WHEN b < 80 THEN {d.ago("3000 + (i * 37) % 2592000")} END,
            CASE WHEN b < 80 THEN 100 + i % 900 ELSE 0 END,
            CASE WHEN b < 80 AND i % 50 = 0 THEN 1 ELSE 0 END,
            CASE WHEN b IN (96, 97) AND (i / 100) % 5 = 0 THEN {d.ago("7200")} END,
            7, {d.ago("i % 600")}
        FROM (SELECT i, i % 100 AS b FROM nums) AS s
    """
    cancels = f"""
        {d.numbers}
        INSERT INTO cancel_requests (
            batch_id, requested_at, requested_by, state, outcome, attempts, next_attempt_at,
            last_attempt_at, last_http_status, accepted_at, closed_at, terminal_status)
        SELECT {d.ident("i")}, {d.ago("95000 + (i * 37) % 2592000")}, 'ops',
            CASE WHEN b >= 84 AND b < 97 THEN 'pending' WHEN b = 97 THEN 'accepted'
                WHEN b = 98 THEN 'failed' WHEN b = 99 THEN 'withdrawn' ELSE 'closed' END,
            CASE WHEN b BETWEEN 60 AND 69 THEN 'cancelled' WHEN b < 84 THEN 'too_late:done'
                WHEN b = 98 THEN 'not_found' END,
            CASE WHEN b = 99 THEN 0 ELSE 1 + i % 3 END,
            CASE WHEN b >= 84 AND b < 97 THEN {d.ago("-(i % 30)")} END,
            CASE WHEN b < 99 THEN {d.ago("94000 + (i * 37) % 2592000")} END,
            CASE WHEN b = 98 THEN 404 WHEN b < 99 THEN 200 END,
            CASE WHEN b BETWEEN 60 AND 69 OR b = 97 THEN {d.ago("94000")} END,
            CASE WHEN b < 84 THEN {d.ago("3600 + (i * 37) % 2592000")} END,
            CASE WHEN b < 84 THEN 'completed' END
        FROM (SELECT i, i % 100 AS b FROM nums) AS s
        WHERE i % 5 = 0 OR b >= 97
    """
    file_state = (
        "CASE WHEN b IN (80, 81, 83) THEN 'pending' WHEN b = 82 THEN 'missing' ELSE 'done' END"
    )
    files = f"""
        {d.numbers}
        INSERT INTO result_files (
            file_id, batch_id, kind, state, lines_committed, results, malformed, duplicates,
            bytes, lines, sha256, end_checked, attempts, started_at, done_at)
        SELECT k.prefix || i, {d.ident("i")}, k.kind, {file_state},
            CASE WHEN b < 80 THEN 100 + i % 900 ELSE 0 END,
            CASE WHEN b < 80 THEN 100 + i % 900 ELSE 0 END, 0, 0,
            CASE WHEN b < 80 THEN 40000 + (i * 7919) % 4000000 END,
            CASE WHEN b < 80 THEN 100 + i % 900 END,
            CASE WHEN b < 80 THEN 'ab12' END,
            CASE WHEN b < 80 THEN TRUE END, 1,
            {d.ago("3500 + (i * 37) % 2592000")},
            CASE WHEN b < 80 THEN {d.ago("3000 + (i * 37) % 2592000")} END
        FROM (SELECT i, i % 100 AS b FROM nums) AS s
        JOIN (SELECT 'output' AS kind, 'file-out-' AS prefix
              UNION ALL SELECT 'error', 'file-err-') AS k
          ON k.kind = 'output' OR i % 10 = 0
        WHERE {has_output}
    """
    deletions = f"""
        {d.numbers}
        INSERT INTO file_deletions (
            file_id, batch_id, kind, state, outcome, attempts, requested_at, next_attempt_at,
            done_at)
        SELECT 'file-out-' || i, {d.ident("i")}, 'output',
            CASE WHEN (i / 100) % 10 = 0 THEN 'pending' WHEN (i / 100) % 10 = 1 THEN 'failed'
                ELSE 'done' END,
            CASE WHEN (i / 100) % 10 > 1 THEN 'deleted' WHEN (i / 100) % 10 = 1
                THEN 'refused' END,
            1, {d.ago("2000 + (i * 37) % 2592000")},
            CASE WHEN (i / 100) % 10 = 0 THEN {d.ago("-60")} END,
            CASE WHEN (i / 100) % 10 > 1 THEN {d.ago("1000 + (i * 37) % 2592000")} END
        FROM (SELECT i, i % 100 AS b FROM nums) AS s
        WHERE b < 60 AND i % 3 = 0
    """
    pause = (
        "INSERT INTO pauses (scope, reason, paused_at, until) "
        f"SELECT 'api', 'HTTP 401 (ended)', {d.ago('7200')}, {d.ago('3600')} "
        f"WHERE {d.param} > 0"
    )
    return [batches, cancels, files, deletions, pause]


def seed(kind: str, url: str, batches: int) -> float:
    """Seed the fleet; the seconds it took."""
    started = time.perf_counter()
    if kind == "sqlite":
        path = make_url(url).database
        assert path is not None
        with sqlite3.connect(path) as conn:
            for statement in seed_statements(SQLITE):
                conn.execute(statement, (batches,))
            conn.commit()
            conn.execute("ANALYZE")
        return time.perf_counter() - started
    import psycopg

    with psycopg.connect(_driver_url(url)) as conn:
        for statement in seed_statements(POSTGRES):  # psycopg's modulo is %%
            conn.execute(statement.replace("%", "%%").replace("%%s", "%s"), (batches,))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


# --- a fresh database ----------------------------------------------------------------


def _driver_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


# --- the measurement ---------------------------------------------------------------


@dataclass
class Result:
    kind: str
    batches: int
    seed_s: float
    scrape_ms: list[float] = field(default_factory=list)
    scrape_cpu_ms: list[float] = field(default_factory=list)
    raw_ms: list[float] = field(default_factory=list)
    per_statement: dict[str, list[float]] = field(default_factory=dict)
    body_bytes: int = 0
    write_ms: list[float] = field(default_factory=list)  # a writer's, while scrapes run
    old_upkeep_ms: list[float] = field(default_factory=list)  # OLD_UPKEEP, raw
    new_upkeep_ms: list[float] = field(default_factory=list)  # its one statement now, raw


class Raw:
    """The scrape's statements on one connection of the bare driver."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        if kind == "sqlite":
            path = make_url(url).database
            assert path is not None
            self.conn: Any = sqlite3.connect(path)
        else:
            import psycopg

            self.conn = psycopg.connect(_driver_url(url))

    def run(self, statements: Sequence[tuple[str, Any]], seen: dict[str, list[float]]) -> float:
        started = time.perf_counter()
        cursor = self.conn.cursor()
        for sql, params in statements:
            at = time.perf_counter()
            cursor.execute(sql, params)
            cursor.fetchall()
            seen.setdefault(sql, []).append((time.perf_counter() - at) * 1e3)
        self.conn.commit()  # ends psycopg's transaction (a no-op for sqlite3's SELECTs)
        return (time.perf_counter() - started) * 1e3

    def close(self) -> None:
        self.conn.close()


def write_beside(kind: str, url: str, stop: threading.Event, seen: list[float]) -> None:
    """A writer as a worker is one: a one-row update in a transaction of its own (on
    SQLite BEGIN IMMEDIATE, as the product's engine begins), every 5 ms until ``stop``;
    each one's wall ms into ``seen``."""
    if kind == "sqlite":
        path = make_url(url).database
        assert path is not None
        conn: Any = sqlite3.connect(path, timeout=30, isolation_level=None)
        begin, sql = "BEGIN IMMEDIATE", "UPDATE batches SET version = version + 1 WHERE id = ?"
    else:
        import psycopg

        conn = psycopg.connect(_driver_url(url), autocommit=True)
        begin, sql = "BEGIN", "UPDATE batches SET version = version + 1 WHERE id = %s"
    try:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.perf_counter()
            conn.execute(begin)
            conn.execute(sql, (f"batch_{n % 1000 + 1:08d}",))
            conn.execute("COMMIT")
            seen.append((time.perf_counter() - started) * 1e3)
            time.sleep(0.005)
    finally:
        conn.close()


def measure(kind: str, batches: int, scrapes: int) -> Result:
    with scratch_database(kind, tag=f"_metrics_{batches}") as url:
        return _measure(kind, url, batches, scrapes)


def _measure(kind: str, url: str, batches: int, scrapes: int) -> Result:
    result = Result(kind, batches, seed(kind, url, batches))
    db = Database.connect(url)
    server = None
    raw = Raw(kind, url)
    try:
        caught: dict[str, Any] = {}

        def catch(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                caught.setdefault(statement, params)

        event.listen(db.engine, "before_cursor_execute", catch)
        settings = Settings(database_url=url, metrics_port=0, metrics_address="127.0.0.1")
        server = serve_metrics(settings, Metrics.for_database(db).registry)
        assert server is not None
        address = f"http://127.0.0.1:{server.port}/metrics"
        with httpx.Client(timeout=600) as client:
            body = client.get(address)  # warm-up: connections, caches, the statements
            body.raise_for_status()
            assert "orchestrator_database_up 1.0" in body.text, body.text[:2000]
            result.body_bytes = len(body.content)
            statements = list(caught.items())
            upkeep = [  # upkeep_snapshot's statement over batches, as this checkout has it
                (sql, params)
                for sql, params in statements
                if "harvest_state" in sql and "FROM batches" in sql
            ]
            raw.run(statements, {})  # warm-up
            for _ in range(scrapes):  # in turn: the host's load hits both alike
                started, cpu = time.perf_counter(), time.process_time()
                client.get(address).raise_for_status()
                result.scrape_ms.append((time.perf_counter() - started) * 1e3)
                result.scrape_cpu_ms.append((time.process_time() - cpu) * 1e3)
                result.raw_ms.append(raw.run(statements, result.per_statement))
                result.old_upkeep_ms.append(raw.run([(sql, ()) for sql in OLD_UPKEEP], {}))
                result.new_upkeep_ms.append(raw.run(upkeep, {}))
            stop = threading.Event()  # then the same scrapes again, a writer beside them
            writer = threading.Thread(
                target=write_beside, args=(kind, url, stop, result.write_ms), daemon=True
            )
            writer.start()
            time.sleep(0.05)
            for _ in range(scrapes):  # spaced, as scrapes come: a writer waits for one
                client.get(address).raise_for_status()
                time.sleep(0.25)
            stop.set()
            writer.join()
        event.remove(db.engine, "before_cursor_execute", catch)
        return result
    finally:
        raw.close()
        if server is not None:
            server.close()
        db.dispose()


def _short(sql: str) -> str:
    one = " ".join(sql.split())
    return one if len(one) <= 110 else one[:107] + "..."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres, or both")
    parser.add_argument("--batches", default="10000,100000", help="sizes, comma-separated")
    parser.add_argument("--scrapes", type=int, default=7, help="timed scrapes per size")
    args = parser.parse_args()
    sizes = [int(n) for n in args.batches.split(",")]
    results = []
    for kind in args.db.split(","):
        for batches in sizes:
            result = measure(kind, batches, args.scrapes)
            results.append(result)
            print(
                f"{kind} {batches}: seeded in {result.seed_s:.1f} s; scrapes (ms) "
                + " ".join(f"{ms:.1f}" for ms in result.scrape_ms),
                file=sys.stderr,
                flush=True,
            )
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.scrapes} scrapes a size")
    print(
        "| database | batches | scrape wall ms (median) | raw queries ms (median) | "
        "scrape / raw | scrape CPU ms, this process | a writer's ms beside scrapes, "
        "median / max |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        scrape, raw = statistics.median(r.scrape_ms), statistics.median(r.raw_ms)
        print(
            f"| {r.kind} | {r.batches:,} | {scrape:.1f} | {raw:.1f} | {scrape / raw:.2f} | "
            f"{statistics.median(r.scrape_cpu_ms):.1f} | "
            f"{statistics.median(r.write_ms):.1f} / {max(r.write_ms):.1f} |"
        )
    print(
        "\nharvest counts and the oldest waiting end, raw, in turn: the two statements "
        "before 'one scan' (OLD_UPKEEP) against this checkout's"
    )
    print("| database | batches | before ms (median) | now ms (median) | before / now |")
    print("|---|---|---|---|---|")
    for r in results:
        old, new = statistics.median(r.old_upkeep_ms), statistics.median(r.new_upkeep_ms)
        print(f"| {r.kind} | {r.batches:,} | {old:.1f} | {new:.1f} | {old / new:.2f} |")
    for r in results:
        print(f"\n{r.kind}, {r.batches:,} batches: raw ms a statement (median)")
        print("| ms | statement |")
        print("|---|---|")
        for sql, times in r.per_statement.items():
            print(f"| {statistics.median(times):.2f} | `{_short(sql)}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
