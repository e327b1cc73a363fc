"""FileIngest on files the simulator cannot produce: garbage lines, a cut last line."""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from sqlalchemy import event, select
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from orchestrator.cli.main import main
from orchestrator.clock import ManualClock
from orchestrator.core.harvest import FileState
from orchestrator.db import results as results_module
from orchestrator.db.database import Database
from orchestrator.db.engine import sqlite_file
from orchestrator.db.models import Batch, BatchResult, ResultFile, ResultLineError
from orchestrator.db.polls import PollStore
from orchestrator.db.results import Chunk, LeaseLost, ResultStore
from orchestrator.db.wal import WAL_COMMITS, BackgroundCheckpoint
from orchestrator.processes.ingest import FileIngest, IngestSettings

from .conftest import make_client, track

BATCH = "batch_ingest"


def result_line(index: int, kind: str = "output") -> bytes:
    if kind == "output":
        response = {"status_code": 200, "request_id": f"req_{index}", "body": {"n": index}}
        return orjson.dumps({"id": f"l{index}", "custom_id": f"c{index}", "response": response})
    error = {"code": "batch_cancelled", "message": "cancelled"}
    return orjson.dumps({"id": f"l{index}", "custom_id": f"c{index}", "error": error})


def serving(*bodies: bytes) -> Callable[[httpx.Request], httpx.Response]:
    """Each download gets the next body (the last repeats), streamed in small pieces.

    Streamed without Content-Length: the client checks a Content-Length against the
    bytes that crossed the network, which a MockTransport body given as bytes never does.
    And without the `Transfer-Encoding: chunked` httpx writes on a streamed response:
    nothing here frames the body, so its end is the stream's (a cut at the end looks
    like one, as on a connection that closes).
    """
    served: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(1)
        body = bodies[min(len(served), len(bodies)) - 1]
        pieces = [body[i : i + 5] for i in range(0, len(body), 5)]
        response = httpx.Response(200, content=iter(pieces))
        del response.headers["transfer-encoding"]
        return response

    return handler


def ingest_with(
    database: Database,
    clock: ManualClock,
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    chunk_lines: int = 3,
    chunk_bytes: int = 32 << 20,
    attempts: int = 3,
    owner: str = "ingest-test",
) -> FileIngest:
    track(database, clock, BATCH)
    PollStore(database).claim_due(now=clock.now(), owner=owner, lease_seconds=60, limit=1)
    client = make_client("http://files.test/v1", clock, transport=httpx.MockTransport(handler))
    return FileIngest(
        client=client,
        results=ResultStore(database),
        clock=clock,
        owner=owner,
        settings=IngestSettings(
            chunk_lines=chunk_lines,
            chunk_bytes=chunk_bytes,
            download_attempts=attempts,
            read_bytes=7,
        ),
    )


def stored(database: Database) -> list[tuple[str, int, str | None]]:
    with database.transaction() as session:
        rows = session.execute(
            select(BatchResult.custom_id, BatchResult.line_number, BatchResult.error_code).order_by(
                BatchResult.line_number
            )
        )
        return [(c, n, e) for c, n, e in rows]


def line_errors(database: Database) -> list[tuple[int, str, str]]:
    with database.transaction() as session:
        rows = session.execute(
            select(ResultLineError.line_number, ResultLineError.raw, ResultLineError.error)
        )
        return sorted((n, raw, error) for n, raw, error in rows)


def the_file(database: Database) -> ResultFile:
    with database.transaction() as session:
        found = session.get(ResultFile, {"batch_id": BATCH, "file_id": "file-x"})
        assert found is not None
        return found


def test_garbage_lines_are_kept_verbatim_and_the_rest_stored(
    database: Database, clock: ManualClock
) -> None:
    body = b"\n".join(
        [
            result_line(1),
            b"{this is not json",
            b"",
            result_line(2, "error"),
            b"\xff\xfe binary \x00 junk",
            result_line(3),
        ]
    )  # the last line has no newline, and parses: a complete file
    outcome = ingest_with(database, clock, serving(body)).run(
        batch_id=BATCH, file_id="file-x", kind="error"
    )
    assert outcome.state is FileState.DONE
    assert (outcome.inserted, outcome.malformed, outcome.duplicates) == (3, 2, 0)
    assert stored(database) == [("c1", 1, None), ("c2", 4, "batch_cancelled"), ("c3", 6, None)]
    errors = line_errors(database)
    assert [(n, raw) for n, raw, _ in errors] == [
        (2, "{this is not json"),
        (5, "\\xff\\xfe binary \\x00 junk"),
    ]
    assert all(e.startswith("not valid JSON") for _, _, e in errors)
    record = the_file(database)
    assert (record.lines, record.lines_committed, record.results, record.malformed) == (6, 6, 3, 2)
    assert record.bytes == len(body) and record.sha256 == hashlib.sha256(body).hexdigest()


def test_a_cut_last_line_is_a_truncation_not_a_bad_line(
    database: Database, clock: ManualClock
) -> None:
    full = b"".join(result_line(i) + b"\n" for i in range(10))
    cut = full[: len(full) - 9]  # clean end of stream, last line cut mid-JSON
    outcome = ingest_with(database, clock, serving(cut, full)).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert outcome.state is FileState.DONE and outcome.downloads == 2
    assert (outcome.inserted, outcome.malformed, outcome.duplicates) == (10, 0, 0)
    assert line_errors(database) == []
    assert [n for _, n, _ in stored(database)] == list(range(1, 11))
    assert the_file(database).attempts == 2


def test_a_file_that_is_always_cut_stays_pending_with_the_reason(
    database: Database, clock: ManualClock
) -> None:
    full = b"".join(result_line(i) + b"\n" for i in range(10))
    outcome = ingest_with(database, clock, serving(full[:-9]), attempts=3).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert outcome.state is FileState.PENDING and outcome.downloads == 3
    assert outcome.error is not None and "looks cut short" in outcome.error
    record = the_file(database)
    assert record.state == "pending" and record.lines_committed == 9  # the nine whole lines
    assert record.last_error == outcome.error
    assert outcome.inserted == 9 and outcome.duplicates == 0  # stored once, not three times


def test_duplicate_custom_ids_are_counted_and_stored_once(
    database: Database, clock: ManualClock
) -> None:
    body = b"".join(result_line(i % 4) + b"\n" for i in range(10))
    outcome = ingest_with(database, clock, serving(body)).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert (outcome.inserted, outcome.duplicates) == (4, 6)
    assert the_file(database).duplicates == 6
    assert [c for c, _, _ in stored(database)] == ["c0", "c1", "c2", "c3"]


def lanes(database: Database) -> int:
    """Connections a download's chunks commit on (``ResultStore.chunk_connections``;
    the test pool can spare the second)."""
    return 2 if database.is_postgres else 1


def test_a_download_commits_its_chunks_on_connections_held_for_it(
    database: Database, clock: ManualClock
) -> None:
    """No pool checkout (nor ping) per chunk: one for the file's row, one held per lane
    for the chunks (WAL checkpoint threads take their own)."""
    body = b"".join(result_line(i) + b"\n" for i in range(10))  # four chunks of three
    ingest = ingest_with(database, clock, serving(body))
    me = threading.get_ident()
    checkouts: list[int] = []
    elsewhere: list[int] = []  # SQLite's WAL checkpoints: one thread, one connection

    def counted(*_args: object) -> None:
        (checkouts if threading.get_ident() == me else elsewhere).append(1)

    event.listen(database.engine, "checkout", counted)
    try:
        outcome = ingest.run(batch_id=BATCH, file_id="file-x", kind="output")
    finally:
        event.remove(database.engine, "checkout", counted)
    assert (outcome.state, outcome.inserted) == (FileState.DONE, 10)
    assert the_file(database).lines_committed == 10
    assert len(checkouts) == 1 + lanes(database)
    assert len(elsewhere) == (0 if database.is_postgres else 1)


def test_a_custom_id_stored_by_an_earlier_chunk_rolls_back_only_the_copy_attempt(
    database: Database, clock: ManualClock
) -> None:
    """On PostgreSQL the chunk's COPY meets the stored id, its transaction is rolled back
    and the chunk stored again skipping it; the earlier chunks and the rest stay."""
    lines = [result_line(i) for i in range(6)] + [result_line(1), result_line(7)]
    body = b"".join(line + b"\n" for line in lines)  # chunks of three: 0-2, 3-5, 1 7
    outcome = ingest_with(database, clock, serving(body)).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert (outcome.state, outcome.inserted, outcome.duplicates) == (FileState.DONE, 7, 1)
    assert [n for _, n, _ in stored(database)] == [1, 2, 3, 4, 5, 6, 8]
    record = the_file(database)
    assert (record.lines_committed, record.results, record.duplicates) == (8, 7, 1)


def test_nothing_is_stored_without_the_lease(database: Database, clock: ManualClock) -> None:
    body = b"".join(result_line(i) + b"\n" for i in range(10))
    ingest = ingest_with(database, clock, serving(body))
    with database.transaction() as session:
        row = session.get(Batch, BATCH)
        assert row is not None
        row.lease_owner = "someone-else"
    with pytest.raises(LeaseLost, match="no longer held"):
        ingest.run(batch_id=BATCH, file_id="file-x", kind="output")
    assert stored(database) == [] and the_file(database).lines_committed == 0


def test_a_stale_checkpoint_is_refused(database: Database, clock: ManualClock) -> None:
    results = ResultStore(database)
    ingest_with(database, clock, serving(b""))
    results.begin_file(batch_id=BATCH, file_id="file-x", kind="output", now=clock.now())

    def commit() -> None:
        results.commit_chunk(
            chunk=Chunk(
                batch_id=BATCH, file_id="file-x", from_line=0, to_line=2, rows=[], errors=[]
            ),
            owner="ingest-test",
            lease_until=clock.now(),
        )

    commit()
    with pytest.raises(LeaseLost, match="checkpoint is 2, not 0"):
        commit()


def test_an_overlong_line_is_kept_as_its_size_and_prefix_and_the_rest_stored(
    database: Database, clock: ManualClock
) -> None:
    cap = 64 << 10
    huge = b'{"custom_id": "big", "response": {"body": "' + b"x" * (3 * cap) + b'"}}'
    body = result_line(1) + b"\n" + huge + b"\n" + result_line(3) + b"\n" + b"y" * (2 * cap)
    ingest = ingest_with(database, clock, serving(body))
    ingest.settings = IngestSettings(
        chunk_lines=3, download_attempts=3, read_bytes=4096, max_line_bytes=cap
    )
    outcome = ingest.run(batch_id=BATCH, file_id="file-x", kind="output")
    assert outcome.state is FileState.DONE and outcome.downloads == 1
    assert stored(database) == [("c1", 1, None), ("c3", 3, None)]
    (second, raw2, error2), (fourth, raw4, error4) = line_errors(database)
    assert (second, fourth) == (2, 4)
    assert raw2 == huge[:4096].decode() and raw4 == "y" * 4096
    assert f"line is {len(huge)} bytes, longer than the cap of {cap} bytes" in error2
    assert "ingest_max_line_bytes" in error2
    assert f"line is {2 * cap} bytes" in error4  # the last line, without a newline
    record = the_file(database)
    assert (record.lines, record.results, record.malformed) == (4, 2, 2)
    assert record.bytes == len(body) and record.sha256 == hashlib.sha256(body).hexdigest()


def test_u0000_in_a_body_is_stored_and_in_a_text_field_kept_raw_where_it_cannot_be(
    database: Database, clock: ManualClock
) -> None:
    # PostgreSQL's json keeps the escape \u0000 as sent; its text columns refuse U+0000
    in_body = orjson.dumps(
        {"custom_id": "body", "response": {"status_code": 200, "body": {"text": "a\u0000b"}}}
    )
    in_id = orjson.dumps({"custom_id": "id\u0000", "response": {"status_code": 200}})
    in_error = orjson.dumps({"custom_id": "error", "error": {"code": "c", "message": "m\u0000"}})
    body = b"\n".join([in_body, in_id, in_error, result_line(4)]) + b"\n"
    outcome = ingest_with(database, clock, serving(body)).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert outcome.state is FileState.DONE
    with database.transaction() as session:
        kept = session.scalar(select(BatchResult.body).where(BatchResult.custom_id == "body"))
    assert kept == {"text": "a\u0000b"}
    custom_ids = [c for c, _, _ in stored(database)]
    if database.is_postgres:
        assert custom_ids == ["body", "c4"]
        assert [(n, e.split(",")[0]) for n, _, e in line_errors(database)] == [
            (2, "has U+0000 in a text field"),
            (3, "has U+0000 in a text field"),
        ]
    else:
        assert custom_ids == ["body", "id\u0000", "error", "c4"]
        assert line_errors(database) == []


def test_sqlite_chunks_leave_the_wal_checkpointed_and_the_pool_as_it_was(
    sqlite_url: str, clock: ManualClock
) -> None:
    """Chunks commit without the autocheckpoint; a thread checkpoints after each, and
    the pool gives the connection back with SQLite's default."""
    database = Database.connect(sqlite_url)
    try:
        lines = [
            orjson.dumps({"custom_id": f"c{i}", "response": {"body": "x" * 4000}})
            for i in range(600)
        ]
        body = b"\n".join(lines) + b"\n"
        outcome = ingest_with(database, clock, serving(body), chunk_lines=200).run(
            batch_id=BATCH, file_id="file-x", kind="output"
        )
        assert (outcome.state, outcome.inserted) == (FileState.DONE, 600)
        pool = database.engine.pool
        assert isinstance(pool, QueuePool)
        pooled = [database.engine.raw_connection() for _ in range(pool.checkedin())]
        try:
            for connection in pooled:  # every connection the ingest used, back to the default
                cursor = connection.cursor()
                assert cursor.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
            # busy, frames in the WAL, frames checkpointed: nothing left to copy
            busy, frames, copied = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            for connection in pooled:
                connection.close()
        assert busy == 0 and frames == copied
        assert the_file(database).results == 600
    finally:
        database.dispose()


def test_sqlite_the_wal_stays_a_few_chunks_long(
    sqlite_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks do not wait for every checkpoint, but every WAL_COMMITS commits they do,
    so the WAL restarts from its beginning: it never holds the whole file. Here the
    checkpoint thread runs only while the writer waits for it (the slowest disk)."""
    gate = threading.Event()
    checkpoint, wait, close = (
        BackgroundCheckpoint._checkpoint,
        BackgroundCheckpoint.wait,
        BackgroundCheckpoint.close,
    )

    def gated(connection: PoolProxiedConnection) -> None:
        gate.wait()
        checkpoint(connection)

    def waited(self: BackgroundCheckpoint) -> None:
        gate.set()
        try:
            wait(self)
        finally:
            gate.clear()

    def closed(self: BackgroundCheckpoint) -> None:
        gate.set()
        close(self)

    monkeypatch.setattr(BackgroundCheckpoint, "_checkpoint", staticmethod(gated))
    monkeypatch.setattr(BackgroundCheckpoint, "wait", waited)
    monkeypatch.setattr(BackgroundCheckpoint, "close", closed)
    database = Database.connect(sqlite_url)
    try:
        lines = [
            orjson.dumps({"custom_id": f"c{i}", "response": {"body": "x" * 4000}})
            for i in range(1200)
        ]
        chunks = 24
        body = b"\n".join(lines) + b"\n"
        outcome = ingest_with(database, clock, serving(body), chunk_lines=1200 // chunks).run(
            batch_id=BATCH, file_id="file-x", kind="output"
        )
        assert (outcome.state, outcome.inserted) == (FileState.DONE, 1200)
        path = sqlite_file(sqlite_url)
        assert path is not None
        wal = Path(f"{path}-wal").stat().st_size  # reused from its start, never shrunk
        per_chunk = path.stat().st_size / chunks
        assert wal <= (WAL_COMMITS + 2) * per_chunk * 1.5
    finally:
        database.dispose()


def cut_after(body: bytes, cut: int, error: Exception) -> Callable[[httpx.Request], httpx.Response]:
    """The first download sends ``body[:cut]`` then fails with ``error``; later ones the
    whole body."""
    served: list[int] = []

    def pieces(sent: bytes) -> Iterator[bytes]:
        for i in range(0, len(sent), 5):
            yield sent[i : i + 5]
        raise error

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(1)
        if len(served) == 1:
            return httpx.Response(200, content=pieces(body[:cut]))
        return httpx.Response(200, content=iter([body]))

    return handler


def test_a_download_cut_inside_a_chunk_resumes_from_its_checkpoint(
    database: Database, clock: ManualClock
) -> None:
    """A chunk's rows are sent (on PostgreSQL: into its open COPY) as its lines arrive;
    cut mid-chunk, the chunk is rolled back whole and the next download stores it."""
    lines = [result_line(i) + b"\n" for i in range(10)]
    body = b"".join(lines)
    cut = sum(map(len, lines[:5])) + 3  # chunks of three: 1-3 commit, 4-5 are sent, 6 cut
    at_failure: list[int] = []  # the checkpoint when a download failed
    progress: list[int] = []
    ingest = ingest_with(database, clock, cut_after(body, cut, httpx.ReadError("connection reset")))
    ingest.on_progress = lambda: progress.append(1)
    note_failure = ingest.results.note_failure

    def noted(batch_id: str, file_id: str, *, error: str) -> None:
        at_failure.append(the_file(database).lines_committed)
        note_failure(batch_id, file_id, error=error)

    ingest.results.note_failure = noted  # type: ignore[method-assign]
    outcome = ingest.run(batch_id=BATCH, file_id="file-x", kind="output")
    assert outcome.state is FileState.DONE and outcome.downloads == 2
    assert outcome.error is None
    assert at_failure == [3]  # the first download committed 1-3 only, nothing of 4-6
    assert len(progress) == 4  # one chunk, then three
    assert (outcome.inserted, outcome.duplicates, outcome.malformed) == (10, 0, 0)
    assert [(c, n) for c, n, _ in stored(database)] == [(f"c{i}", i + 1) for i in range(10)]
    record = the_file(database)
    assert (record.lines_committed, record.results, record.duplicates) == (10, 10, 0)
    assert record.sha256 == hashlib.sha256(body).hexdigest()


def test_a_download_cut_after_a_refused_row_resumes_and_stores_every_line(
    database: Database, clock: ManualClock
) -> None:
    """The second chunk repeats a stored custom_id (on PostgreSQL the server refuses its
    COPY, and says so only when the COPY ends), then the download is cut on a line's
    end: the chunk is not stored short and the file not marked done, the next download
    stores the rest."""

    def line(index: int) -> bytes:  # large: the driver sends each row as it is written
        response = {"status_code": 200, "body": {"n": index, "pad": "x" * 40_000}}
        return orjson.dumps({"custom_id": f"c{index}", "response": response}) + b"\n"

    lines = [line(i) for i in range(10)]
    lines[3] = line(1)  # chunks of three: the second starts with a repeat
    body = b"".join(lines)
    cut = sum(map(len, lines[:5]))  # lines 4 and 5 are sent whole, then the cut
    ingest = ingest_with(database, clock, cut_after(body, cut, httpx.ReadError("reset")))
    outcome = ingest.run(batch_id=BATCH, file_id="file-x", kind="output")
    assert outcome.state is FileState.DONE and outcome.downloads == 2
    assert (outcome.inserted, outcome.duplicates, outcome.malformed) == (9, 1, 0)
    assert [n for _, n, _ in stored(database)] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    record = the_file(database)
    assert (record.lines, record.lines_committed, record.results) == (10, 10, 9)


def test_a_refused_chunk_stores_a_body_with_u0000_as_sent(
    database: Database, clock: ManualClock
) -> None:
    """A chunk stored again after its COPY was refused (a repeated custom_id) keeps its
    bodies as the COPY would: \\u0000 included, which PostgreSQL's json keeps and jsonb
    refuses, and the keys in the order sent."""
    odd = b'{"z": 1, "text": "a\\u0000b", "a": 2}'
    with_nul = b'{"custom_id": "nul", "response": {"status_code": 200, "body": ' + odd + b"}}"
    body = b"".join(line + b"\n" for line in [result_line(0), result_line(0), with_nul])
    outcome = ingest_with(database, clock, serving(body)).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert (outcome.state, outcome.inserted, outcome.duplicates) == (FileState.DONE, 2, 1)
    with database.transaction() as session:
        kept = session.scalar(select(BatchResult.body).where(BatchResult.custom_id == "nul"))
    assert kept == {"z": 1, "text": "a\u0000b", "a": 2}
    if database.is_postgres:
        with database.engine.connect() as connection:
            text = connection.exec_driver_sql(
                "SELECT body::text FROM batch_results WHERE custom_id = 'nul'"
            ).scalar()
        assert text == odd.decode()


def test_a_file_that_shrank_between_downloads_is_not_marked_done(
    database: Database, clock: ManualClock
) -> None:
    """The first download stores six lines and is cut; the next finds four: the file
    changed on the server. The six stay, and the file stays pending with the reason
    (it was marked done with more lines stored than it has)."""
    lines = [result_line(i) + b"\n" for i in range(10)]
    first = b"".join(lines)
    cut = sum(map(len, lines[:7])) + 2  # chunks of three: 1-6 commit, then the cut
    served: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(1)
        if len(served) == 1:
            return cut_after(first, cut, httpx.ReadError("reset"))(request)
        return httpx.Response(200, content=iter([b"".join(lines[:4])]))

    outcome = ingest_with(database, clock, handler).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert outcome.state is FileState.PENDING and outcome.downloads == 2
    assert outcome.error is not None
    assert "has 4 lines, but 6 are stored" in outcome.error
    record = the_file(database)
    assert (record.state, record.lines_committed, record.results) == ("pending", 6, 6)
    assert record.last_error == outcome.error
    assert [n for _, n, _ in stored(database)] == [1, 2, 3, 4, 5, 6]


def test_a_chunk_of_long_lines_commits_at_its_byte_limit(
    database: Database, clock: ManualClock
) -> None:
    """A chunk's lines are held until it commits: long lines end it before its count."""
    lines = [
        orjson.dumps({"custom_id": f"c{i}", "response": {"body": "x" * 4000}}) + b"\n"
        for i in range(10)
    ]
    body = b"".join(lines)
    ingest = ingest_with(database, clock, serving(body), chunk_lines=1000, chunk_bytes=10_000)
    progress: list[int] = []
    ingest.on_progress = lambda: progress.append(1)  # once a chunk, as it commits
    outcome = ingest.run(batch_id=BATCH, file_id="file-x", kind="output")
    assert (outcome.state, outcome.inserted) == (FileState.DONE, 10)
    assert len(progress) == 4  # 3 + 3 + 3 + 1: three lines of 4 KB reach 10,000 bytes
    assert the_file(database).lines == 10


class Crash(Exception):
    """The process dies here (nothing catches it)."""


def test_a_crash_inside_a_chunk_leaves_the_checkpoint_and_a_restart_stores_the_rest(
    database: Database, clock: ManualClock
) -> None:
    lines = [result_line(i) + b"\n" for i in range(10)]
    body = b"".join(lines)
    cut = sum(map(len, lines[:7])) + 2  # chunks of three: 1-6 commit, 7 is sent, 8 cut
    with pytest.raises(Crash):
        ingest_with(database, clock, cut_after(body, cut, Crash())).run(
            batch_id=BATCH, file_id="file-x", kind="output"
        )
    record = the_file(database)
    assert (record.state, record.lines_committed, record.results) == ("pending", 6, 6)
    assert [n for _, n, _ in stored(database)] == [1, 2, 3, 4, 5, 6]
    # a new process: the lease is taken over, the file resumed from its checkpoint
    results = ResultStore(database)
    client = make_client(
        "http://files.test/v1", clock, transport=httpx.MockTransport(serving(body))
    )
    outcome = FileIngest(
        client=client,
        results=results,
        clock=clock,
        owner="ingest-test",
        settings=IngestSettings(chunk_lines=3, read_bytes=7),
    ).run(batch_id=BATCH, file_id="file-x", kind="output")
    assert (outcome.state, outcome.inserted, outcome.duplicates) == (FileState.DONE, 4, 0)
    assert [n for _, n, _ in stored(database)] == list(range(1, 11))
    record = the_file(database)
    assert (record.lines_committed, record.results, record.lines, record.attempts) == (
        10,
        10,
        10,
        2,
    )


def test_a_refused_copy_stores_its_chunk_again_with_its_bodies_and_line_errors_once(
    database: Database, clock: ManualClock
) -> None:
    """The second chunk repeats a stored custom_id (its COPY is refused on PostgreSQL):
    its lines are parsed again, not stored or counted twice."""
    lines = [result_line(0), result_line(1), result_line(2)]
    lines += [result_line(3), b"{not json", result_line(1)]  # a bad line and a repeat
    lines += [result_line(6)]
    body = b"".join(line + b"\n" for line in lines)
    outcome = ingest_with(database, clock, serving(body)).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert outcome.state is FileState.DONE
    assert (outcome.inserted, outcome.duplicates, outcome.malformed) == (5, 1, 1)
    assert [(n, raw) for n, raw, _ in line_errors(database)] == [(5, "{not json")]
    with database.transaction() as session:
        bodies = dict(session.execute(select(BatchResult.custom_id, BatchResult.body)).all())
    assert bodies == {f"c{i}": {"n": i} for i in (0, 1, 2, 3, 6)}
    record = the_file(database)
    assert (record.lines_committed, record.results, record.malformed, record.duplicates) == (
        7,
        5,
        1,
        1,
    )


def test_a_body_as_text_or_as_its_utf8_bytes_is_stored_the_same(
    database: Database, clock: ManualClock
) -> None:
    """Rows may carry the body as str or (PostgreSQL's fast path) bytes; either way the
    same JSON is stored, non-ASCII and escapes included (a binary COPY on PostgreSQL
    sends every field in its column's exact form)."""
    results = ResultStore(database)
    ingest_with(database, clock, serving(b""))
    results.begin_file(batch_id=BATCH, file_id="file-x", kind="output", now=clock.now())
    text = r'{"content": "d\u00e9j\u00e0 vu — \n\t \" \\", "n": 1}'  # JSON escapes, and UTF-8
    utf8 = text.encode() if results.json_bytes else text  # sqlite3 would store bytes as a blob
    rows = [
        (BATCH, "as-str", None, "file-x", "output", 1, 200, "req_1", text, None, None),
        (BATCH, "as-bytes", "line_2", "file-x", "output", 2, None, None, utf8, "e", "é\tx"),
    ]
    chunk = Chunk(batch_id=BATCH, file_id="file-x", from_line=0, to_line=2, rows=rows, errors=[])
    results.commit_chunk(chunk=chunk, owner="ingest-test", lease_until=clock.now())
    with database.transaction() as session:
        stored_rows = session.execute(
            select(
                BatchResult.custom_id,
                BatchResult.line_number,
                BatchResult.status_code,
                BatchResult.request_id,
                BatchResult.body,
                BatchResult.error_message,
            ).order_by(BatchResult.line_number)
        ).all()
    body = {"content": 'déjà vu — \n\t " \\', "n": 1}
    assert [tuple(r) for r in stored_rows] == [
        ("as-str", 1, 200, "req_1", body, None),
        ("as-bytes", 2, None, None, body, "é\tx"),
    ]


@pytest.mark.postgres
def test_a_refused_copy_needs_rows_it_can_read_again(pg_url: str, clock: ManualClock) -> None:
    database = Database.connect(pg_url)
    try:
        results = ResultStore(database)
        ingest_with(database, clock, serving(b""))
        results.begin_file(batch_id=BATCH, file_id="file-x", kind="output", now=clock.now())
        row = (BATCH, "c1", None, "file-x", "output", 1, 200, None, b"{}", None, None)
        for rows in ([row], iter([row])):  # the second meets the first's custom_id
            chunk = Chunk(
                batch_id=BATCH, file_id="file-x", from_line=0, to_line=1, rows=rows, errors=[]
            )
            if isinstance(rows, list):
                results.commit_chunk(chunk=chunk, owner="ingest-test", lease_until=clock.now())
                continue
            chunk.from_line, chunk.to_line = 1, 2
            with pytest.raises(TypeError, match="iterable again"):
                results.commit_chunk(chunk=chunk, owner="ingest-test", lease_until=clock.now())
        assert the_file(database).lines_committed == 1
    finally:
        database.dispose()


def test_each_committed_chunk_extends_the_batch_lease(
    database: Database, clock: ManualClock
) -> None:
    body = b"".join(result_line(i) + b"\n" for i in range(10))
    ingest = ingest_with(database, clock, serving(body))
    leases: list[datetime] = []

    def later() -> None:  # the next chunk's heartbeat is a minute later
        with database.transaction() as session:
            batch = session.get(Batch, BATCH)
            assert batch is not None and batch.lease_expires_at is not None
            leases.append(batch.lease_expires_at)
        clock.advance(60)

    ingest.on_progress = later
    start = clock.now()
    outcome = ingest.run(batch_id=BATCH, file_id="file-x", kind="output")
    assert (outcome.state, outcome.inserted) == (FileState.DONE, 10)
    lease = timedelta(seconds=ingest.settings.lease_seconds)
    # a chunk starts (and takes its time) once the chunk before it on its lane was
    # counted: with two lanes, the second starts before the first is counted
    assert len(leases) == 4 and leases == sorted(leases) and leases[0] >= start + lease
    assert leases[-1] == start + lease + timedelta(seconds=60 * (4 - lanes(database)))


def test_a_custom_id_repeated_by_the_next_chunk_is_stored_once(
    database: Database, clock: ManualClock
) -> None:
    """With two lanes the two chunks are in flight together: the later one sends the
    repeated id only after the earlier one committed, then stores its chunk again
    skipping it, and neither waits on the other for good."""
    lines = [result_line(0), result_line(1), result_line(2)]
    lines += [result_line(1), result_line(4), result_line(2)]  # chunks of three: 1 and 2 again
    lines += [result_line(6)]
    body = b"".join(line + b"\n" for line in lines)
    outcome = ingest_with(database, clock, serving(body)).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert (outcome.state, outcome.inserted, outcome.duplicates) == (FileState.DONE, 5, 2)
    assert [(c, n) for c, n, _ in stored(database)] == [
        ("c0", 1),
        ("c1", 2),
        ("c2", 3),
        ("c4", 5),
        ("c6", 7),
    ]
    record = the_file(database)
    assert (record.lines_committed, record.results, record.duplicates) == (7, 5, 2)


def test_a_chunk_that_fails_to_commit_takes_the_one_after_it_down_too(
    database: Database, clock: ManualClock
) -> None:
    """The second chunk loses the lease at its commit; the third, in flight on the other
    lane (PostgreSQL), is rolled back, not committed past it: the checkpoint stays after
    the first, and a new owner stores the rest exactly once."""
    body = b"".join(result_line(i) + b"\n" for i in range(10))
    ingest = ingest_with(database, clock, serving(body))
    leases = ingest.results._leases
    fence = leases.fence

    def lost_at_line_4(session: Any, owner: str, key: str, *, until: Any) -> bool:
        moved = session.execute(
            select(ResultFile.lines_committed).where(ResultFile.batch_id == key)
        ).scalar_one()
        if moved == 6:  # the second chunk (lines 4-6) has moved it, not committed yet
            return False
        return fence(session, owner, key, until=until)

    leases.fence = lost_at_line_4  # type: ignore[method-assign]
    with pytest.raises(LeaseLost, match="no longer held"):
        ingest.run(batch_id=BATCH, file_id="file-x", kind="output")
    assert the_file(database).lines_committed == 3
    assert [n for _, n, _ in stored(database)] == [1, 2, 3]
    leases.fence = fence  # type: ignore[method-assign]
    outcome = ingest.run(batch_id=BATCH, file_id="file-x", kind="output")
    assert (outcome.state, outcome.inserted, outcome.duplicates) == (FileState.DONE, 7, 0)
    assert [n for _, n, _ in stored(database)] == list(range(1, 11))


@pytest.mark.postgres
def test_with_no_connection_to_spare_a_download_commits_on_one(
    pg_url: str, clock: ManualClock
) -> None:
    """A pool of one (two connections at most) keeps one free: the chunks take the
    other, in turn, and every line is stored once."""
    database = Database.connect(pg_url, pool_size=1)
    try:
        body = b"".join(result_line(i) + b"\n" for i in range(10))
        ingest = ingest_with(database, clock, serving(body))
        checkouts: list[int] = []
        event.listen(database.engine, "checkout", lambda *_: checkouts.append(1))
        outcome = ingest.run(batch_id=BATCH, file_id="file-x", kind="output")
        assert (outcome.state, outcome.inserted) == (FileState.DONE, 10)
        assert len(checkouts) == 2  # the file's row, then the one held for the chunks
        assert [n for _, n, _ in stored(database)] == list(range(1, 11))
    finally:
        database.dispose()


@pytest.mark.postgres
def test_two_chunks_in_flight_never_wait_on_each_other_for_a_repeated_id(
    pg_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst order, forced: the first chunk's rows reach the server only after the
    second chunk has sent its own, one of them an id the first holds too. Were it sent,
    the first would wait in the server for the second's uncommitted row while the second
    waits here for the first to commit (the server sees no deadlock: a lock timeout
    would end it, DatabaseBusy). The second holds that row back until the first ends."""
    monkeypatch.setattr(results_module, "CHUNK_LOCK_TIMEOUT", "5s")
    second_sent_or_holding = threading.Event()
    first_copy = threading.Event()  # set once the first chunk's COPY has been let end
    copy_exit = psycopg.Copy.__exit__

    def ends(copy: psycopg.Copy, *exc: Any) -> Any:
        lane = threading.current_thread().name
        if lane.startswith("lane-0") and not first_copy.is_set():
            first_copy.set()  # its rows are still in the client's buffer: hold them
            assert second_sent_or_holding.wait(timeout=60)
        ended = copy_exit(copy, *exc)
        if lane.startswith("lane-1"):
            second_sent_or_holding.set()
        return ended

    wait = concurrent.futures.wait

    def waits(fs: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("lane-1"):
            second_sent_or_holding.set()  # holding a row back, or waiting to commit
        return wait(fs, *args, **kwargs)

    monkeypatch.setattr(psycopg.Copy, "__exit__", ends)
    monkeypatch.setattr(concurrent.futures, "wait", waits)
    database = Database.connect(pg_url)
    try:
        lines = [result_line(0), result_line(1), result_line(2)]
        lines += [result_line(3), result_line(1), result_line(5)]  # 1 again, in flight
        lines += [result_line(6)]
        body = b"".join(line + b"\n" for line in lines)
        outcome = ingest_with(database, clock, serving(body)).run(
            batch_id=BATCH, file_id="file-x", kind="output"
        )
        assert first_copy.is_set()
        assert (outcome.state, outcome.inserted, outcome.duplicates) == (FileState.DONE, 6, 1)
        assert [n for _, n, _ in stored(database)] == [1, 2, 3, 4, 6, 7]
    finally:
        database.dispose()


def test_a_body_the_answer_reading_lets_through_is_stored_and_every_export_writes_it(
    database: Database, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    # an answer's body is stored as sent, checked by msgspec as it is skipped: whatever
    # passes must be what the json column (PostgreSQL checks it again) takes, and what
    # every export writes, whatever orjson or Python's json can hold
    bodies = [
        b'{ "spaced" : [1, 2] }',
        b'"caf\\u00e9 caf\xc3\xa9 \\ud83d\\ude00 \\u0000"',
        b"[1e400, -1e400, 123456789012345678901234567890]",  # beyond a double, 64 bits
        b"[" + b"7" * 5000 + b"]",  # beyond Python's 4,300 digits
        b"[" * 900 + b"]" * 900,  # beyond orjson's writing and any copy by recursion
        b'{"s":"\xff"}',  # bad UTF-8: a line error, not a refused chunk
        b'{"s":"\\ud800"}',  # a lone surrogate, which PostgreSQL would store: kept raw
        b"[1e400]",  # the last line, without a newline: whole, not a cut
    ]
    lines = [
        orjson.dumps({"custom_id": f"c{n}", "response": {"status_code": 200}})[:-2]
        + b',"body":'
        + body
        + b"}}"
        for n, body in enumerate(bodies, 1)
    ]
    outcome = ingest_with(database, clock, serving(b"\n".join(lines))).run(
        batch_id=BATCH, file_id="file-x", kind="output"
    )
    assert outcome.state is FileState.DONE
    assert [c for c, _, _ in stored(database)] == ["c1", "c2", "c3", "c4", "c5", "c8"]
    assert [(n, e.split(":")[0]) for n, _, e in line_errors(database)] == [
        (6, "not valid JSON"),
        (7, "not valid JSON"),
    ]
    with database.transaction() as session:
        kept: dict[str, Any] = dict(
            session.execute(select(BatchResult.custom_id, BatchResult.body)).all()
        )
    assert kept["c1"] == {"spaced": [1, 2]}
    assert kept["c2"] == "café café \U0001f600 \x00"
    url = database.engine.url.render_as_string(hide_password=False)
    for fmt in ("jsonl", "json", "csv", "table"):
        assert main(["--database-url", url, "results", BATCH, "-o", fmt]) == 0, fmt
        out = capsys.readouterr().out.replace('""', '"')  # CSV doubles its quotes
        if fmt != "table":  # the table shortens each body to its column
            assert out.count("c") >= 6
            for body in (bodies[2], bodies[3], bodies[4]):
                assert body.decode() in out, (fmt, body[:20])
