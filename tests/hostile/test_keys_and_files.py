"""The key a server reflects is stored nowhere; two batches naming one file each keep
their own lines; metrics stay on this host unless told otherwise."""

from __future__ import annotations

import threading

from sqlalchemy import select, text

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.db.batches import BatchStore, event_row
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Base, Batch, BatchResult, CancelRequest, ResultFile
from orchestrator.settings import Settings
from tests.hostile.conftest import KEY, events, make_reconciler, make_worker
from tests.hostile.server import Answer, HostileServer, batch_object, error_answer

REFLECTS = "batch_reflects"


def everything_stored(database: Database) -> str:
    """Every row of every table, as text."""
    with database.transaction() as session:
        return "\n".join(
            repr(tuple(found))
            for table in Base.metadata.sorted_tables
            for found in session.execute(select(table))
        )


def test_the_key_reflected_by_the_server_is_stored_nowhere(
    database: Database,
    hostile: HostileServer,
    client: BatchApiClient,
    worker_client: AsyncBatchApiClient,
    clock: ManualClock,
) -> None:
    reflected = batch_object(
        REFLECTS,
        KEY,  # the status text is the key: an undocumented status, an anomaly event
        request_counts={"total": KEY, "completed": 0, "failed": 0},
        metadata={"note": f"key={KEY}"},
        errors={"data": [{"code": "x", "message": f"bad key {KEY}"}]},
    )
    hostile.script("GET", f"/v1/batches/{REFLECTS}", Answer(body=reflected))
    hostile.script("POST", f"/v1/batches/{REFLECTS}/cancel", error_answer(400, f"no, {KEY}"))
    CancelStore(database).request([REFLECTS], now=clock.now(), requested_by="test")

    make_worker(database, worker_client, clock).run(threading.Event(), once=True)
    with make_reconciler(database, client, clock) as reconciler:
        reconciler.run_once()

    assert events(database, REFLECTS, "anomaly")  # it was recorded ...
    stored = everything_stored(database)
    assert "***" in stored and KEY not in stored  # ... without the key


def test_every_text_column_scrubs_whatever_path_the_text_took(
    database: Database, client: BatchApiClient, clock: ManualClock
) -> None:
    BatchStore(database).track([REFLECTS], now=clock.now(), source="track")
    with database.transaction() as session:
        session.add(event_row(REFLECTS, "note", clock.now(), "test", detail=f"{KEY}\x00!"))
    with database.engine.connect() as connection:
        raw = connection.execute(text("SELECT detail FROM batch_events WHERE kind = 'note'"))
        assert raw.scalar_one() == "***\\x00!"  # and NUL, which PostgreSQL refuses, shown


def test_two_batches_naming_one_output_file_each_keep_their_lines(
    database: Database, hostile: HostileServer, client: BatchApiClient, clock: ManualClock
) -> None:
    first, second = "batch_first", "batch_second"
    BatchStore(database).track([first, second], now=clock.now(), source="track")
    for batch_id in (first, second):
        body = batch_object(batch_id, "completed", output_file_id="file-shared", completed_at=9)
        hostile.script("GET", f"/v1/batches/{batch_id}", Answer(body=body))
    lines = b"".join(
        b'{"custom_id": "%s", "response": {"status_code": 200, "body": {}}}\n' % name
        for name in (b"r1", b"r2")
    )
    hostile.script("GET", "/v1/files/file-shared/content", Answer(body=lines))

    with make_reconciler(database, client, clock) as reconciler:
        summary = reconciler.run_once()

    assert summary.harvested == 2 and summary.results_stored == 4
    with database.transaction() as session:
        stored = sorted(session.execute(select(BatchResult.batch_id, BatchResult.custom_id)))
        files = sorted(session.execute(select(ResultFile.batch_id, ResultFile.state)))
        harvest = {b.id: b.harvest_state for b in session.scalars(select(Batch))}
    assert [tuple(r) for r in stored] == [
        (first, "r1"),
        (first, "r2"),
        (second, "r1"),
        (second, "r2"),
    ]
    assert [tuple(f) for f in files] == [(first, "done"), (second, "done")]
    assert harvest == {first: "done", second: "done"}
    shared = events(database, first, "anomaly") + events(database, second, "anomaly")
    assert len(shared) == 2 and all("file-shared" in s for s in shared)  # a person is told
    assert any("file-shared" in a for a in summary.anomalies)


def test_metrics_bind_loopback_unless_told_otherwise() -> None:
    assert Settings(database_url="sqlite:///x.sqlite3").metrics_address == "127.0.0.1"


def test_an_overlong_request_id_is_cut_to_its_column_not_a_failed_transaction(
    database: Database,
    hostile: HostileServer,
    worker_client: AsyncBatchApiClient,
    clock: ManualClock,
) -> None:
    headers = {"x-request-id": "req_" + "r" * 190}  # the column holds 128
    answer = Answer(body=batch_object(REFLECTS, "cancelling"), headers=headers)
    hostile.script("POST", f"/v1/batches/{REFLECTS}/cancel", answer)
    CancelStore(database).request([REFLECTS], now=clock.now(), requested_by="test")

    make_worker(database, worker_client, clock).run(threading.Event(), once=True)

    with database.transaction() as session:
        request = session.get(CancelRequest, REFLECTS)
        assert request is not None and request.state == "accepted"
        assert request.last_request_id == headers["x-request-id"][:128]
